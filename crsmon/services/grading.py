"""Grade one patient: rebuild the snapshots, grade the episode, write rows once.

A grading run re-reads the patient's current records (tasks carry ids only),
builds a snapshot at every record time (the state builder), grades the episode
with the pure core, and writes, in one transaction under the patient's lock:

- a grade row per snapshot that differs from the newest row at its time (so a
  re-delivered task writes nothing twice, and a retraction or correction that
  changes a snapshot writes a re-derived row beside the old ones);
- the alerts the core decides, unique on their dedup key;
- the patient's pending records marked graded.

Grade rows are append-only and the newest row (highest id) at a time is the
current grade, so each snapshot is compared with the newest row at its time,
not with every row ever written there: a snapshot that returns to an earlier
one (A, then B, then A again after B's record is retracted) is written again
as a new row, or B would stay current. Its ``revision`` is the number of rows
already at that time, which keeps the unique key (time, rule set, snapshot
hash, revision) and makes the repeat a distinct row. Counting is safe because
the run holds the patient's row lock: runs for one patient are serial.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, cast

from sqlalchemy import CursorResult, func, insert, select, update
from sqlalchemy.orm import Session

from crsmon.db.models import (
    Alert,
    ClinicalRecord,
    Grade,
    Patient,
    UnitStay,
    WebhookDelivery,
)
from crsmon.db.repository import (
    STORED_COLUMNS,
    Row,
    StoredRecord,
    content_hash,
    current_stored,
    same_record,
    timeline_from,
)
from crsmon.domain.alerts import AlertDecision, RecordFlag, decide_alerts
from crsmon.domain.episodes import grade_episode
from crsmon.domain.records import BLOOD_PRESSURE, PatientTimeline, Quantity
from crsmon.domain.results import EpisodeResult, ObservationGrade
from crsmon.domain.rules import RuleSet
from crsmon.domain.state import (
    Snapshot,
    StateSettings,
    episode_until,
    hours_since_infusion,
)
from crsmon.presenters import flag_details
from crsmon.risk.scoring import RiskPoint, RiskScorer, ScoreRequest, baseline_of
from crsmon.services.monitoring import AlertPolicy, monitored_spans


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


@dataclass(slots=True)
class _Prepared:
    """One patient read and graded in memory, not yet written."""

    patient: Patient
    records: list[StoredRecord]
    timeline: PatientTimeline
    since: datetime | None
    snapshots: tuple[Snapshot, ...]
    result: EpisodeResult
    pending_ids: tuple[int, ...]
    """The pending records this run read (and so grades): only these are
    marked graded, never one committed while the run was grading."""


def _prepare(
    session: Session,
    patient_id: int,
    rules: RuleSet,
    *,
    now: datetime,
    state: StateSettings | None,
    live: bool,
) -> _Prepared:
    patient = session.get(Patient, patient_id, with_for_update={"key_share": True})
    if patient is None:
        raise LookupError(f"patient {patient_id} does not exist")
    # Pending first, then the records, and only the pending records read are
    # marked graded: a record committed in between would be graded again next
    # run, never marked graded unread. The patient row is locked FOR NO KEY
    # UPDATE: grading runs (and claims, adjudications) wait for each other,
    # while intake's foreign-key share lock never waits for grading.
    pending = _pending(session, patient_id)
    records = current_stored(session, patient_id)
    timeline = timeline_from(patient, records)
    latest = max((r.occurred_at for r in pending), default=now)
    until = max(now, latest)  # a record a few minutes ahead of the server clock
    # Only moments from the earliest time the pending records touch can
    # change: a snapshot reads records up to its time, and the episode carries
    # context forward (onset, waivers), never back. Earlier moments keep their
    # rows; a run with nothing pending (or a regrade) looks at every moment.
    since = affected_from(session, pending) if live and pending else None
    graded_before = session.scalars(
        select(Grade.evaluated_at)
        .where(Grade.patient_id == patient_id, Grade.rule_set == rules.key)
        .distinct()
    )
    episode, snapshots = episode_until(
        timeline, until, state or StateSettings(), extra_times=graded_before
    )
    return _Prepared(
        patient,
        records,
        timeline,
        since,
        snapshots,
        grade_episode(episode, rules),
        tuple(r.id for r in pending),
    )


def _request(prepared: _Prepared) -> ScoreRequest:
    timeline = prepared.timeline
    since = prepared.since
    return ScoreRequest(
        baseline_of(prepared.patient, timeline),
        timeline,
        [(o.t_hours, o.result.grade) for o in prepared.result.observations],
        None if since is None else hours_since_infusion(timeline, since),
    )


def _finish(
    session: Session,
    prepared: _Prepared,
    scored: list[RiskPoint],
    rules: RuleSet,
    *,
    now: datetime,
    policy: AlertPolicy,
    live: bool,
) -> GradingRun:
    patient, timeline, result = prepared.patient, prepared.timeline, prepared.result
    scorer = policy.risk
    points = {p.t_hours: p for p in scored}
    written = _write_grades(
        session,
        patient.id,
        rules,
        result.observations,
        prepared.snapshots,
        points,
        scorer,
        since=prepared.since,
    )
    if not live:
        return GradingRun(written, (), 0)
    stays = session.scalars(select(UnitStay).where(UnitStay.patient_id == patient.id))
    died_at = None if timeline.death is None else timeline.death.died_at
    decisions = decide_alerts(
        result,
        field_sources={i: dict(s.sources) for i, s in enumerate(prepared.snapshots)},
        vital_times_h=vital_times_h(timeline),
        as_of_h=hours_since_infusion(timeline, now),
        stale_after_h=policy.stale_after_h,
        monitoring_days=policy.monitoring_days,
        monitored_h=monitored_spans(patient.infusion_at, list(stays), died_at),
        record_flags=record_flags(timeline, prepared.records),
        risk_signals=[] if scorer is None else scorer.signals(list(points.values())),
    )
    raised = _raise_alerts(session, patient, decisions, policy.webhook_urls, now)
    graded = 0
    ids = prepared.pending_ids
    for start in range(0, len(ids), 5000):  # SQLite's bound-parameter limit
        result_ = session.execute(  # an UPDATE: a cursor result with a row count
            update(ClinicalRecord)
            .where(
                ClinicalRecord.id.in_(ids[start : start + 5000]),
                ClinicalRecord.grading_state == "pending",
            )
            .values(grading_state="graded", graded_at=_database_now(session))
            # Nothing in this session reads the state back: no in-Python
            # evaluation of the criteria over every loaded record.
            .execution_options(synchronize_session=False)
        )
        graded += cast(CursorResult[Any], result_).rowcount
    return GradingRun(written, raised, graded)


def grade_patient(
    session: Session,
    patient_id: int,
    rules: RuleSet,
    *,
    now: datetime,
    policy: AlertPolicy,
    state: StateSettings | None = None,
    live: bool = True,
) -> GradingRun:
    """Grade a patient's history up to ``now`` and write what is new (idempotent).

    Alerts of a push kind get one webhook delivery row per configured URL, in
    the same transaction (the outbox :mod:`crsmon.services.webhooks` sends).
    ``live=False`` regrades under another rule set: grade rows only, beside the
    live ones; no alerts and no change to the records' grading state.
    """
    runs = grade_patients(
        session, [patient_id], rules, now=now, policy=policy, state=state, live=live
    )
    return runs[patient_id]


def grade_patients(
    session: Session,
    patient_ids: Iterable[int],
    rules: RuleSet,
    *,
    now: datetime,
    policy: AlertPolicy,
    state: StateSettings | None = None,
    live: bool = True,
) -> dict[int, GradingRun]:
    """:func:`grade_patient` for many patients in the session's transaction:
    each patient's lock is taken in id order (two batches never deadlock),
    and the risk model scores every patient's new moments in one call.

    Raises:
        LookupError: a patient that does not exist (nothing is written).
    """
    prepared = [
        _prepare(session, pid, rules, now=now, state=state, live=live)
        for pid in sorted(set(patient_ids))
    ]
    scorer = policy.risk
    scored = (
        [[] for _ in prepared]
        if scorer is None
        else scorer.score_many([_request(p) for p in prepared])
    )
    return {
        p.patient.id: _finish(
            session, p, points, rules, now=now, policy=policy, live=live
        )
        for p, points in zip(prepared, scored, strict=True)
    }


def _database_now(session: Session) -> Any:
    """The database clock now (PostgreSQL's now() is the transaction's start)."""
    if session.get_bind().dialect.name == "postgresql":
        return func.clock_timestamp()
    return func.now()


def record_flags(timeline: PatientTimeline, records: Sequence[Row]) -> list[RecordFlag]:
    """The §4.4 flags the intake stored on the patient's current records."""
    return [
        RecordFlag(
            record_id=str(r.id),
            t_hours=hours_since_infusion(timeline, r.occurred_at),
            field=flag["field"],
            message=flag["message"],
        )
        for r in records
        for flag in r.quality_flags
    ]


def _pending(session: Session, patient_id: int) -> list[StoredRecord]:
    return [
        StoredRecord(*r)
        for r in session.execute(
            select(*STORED_COLUMNS).where(
                ClinicalRecord.patient_id == patient_id,
                ClinicalRecord.grading_state == "pending",
            )
        )
    ]


def affected_from(session: Session, pending: Sequence[Row]) -> datetime:
    """The earliest time the pending records change: their own times, and
    the times of the records a pending correction supersedes or a pending
    retraction withdraws."""
    times: list[datetime] = [r.occurred_at for r in pending]
    superseded = [r.supersedes_id for r in pending if r.supersedes_id is not None]
    if superseded:
        times += session.scalars(
            select(ClinicalRecord.occurred_at).where(ClinicalRecord.id.in_(superseded))
        )
    for r in pending:
        if r.kind == "retraction":
            times += session.scalars(
                select(ClinicalRecord.occurred_at).where(
                    ClinicalRecord.source_system == r.source_system,
                    same_record(r.details["target_record_id"]),
                )
            )
    return min(times)


def _write_grades(
    session: Session,
    patient_id: int,
    rules: RuleSet,
    observations: tuple[ObservationGrade, ...],
    snapshots: tuple[Snapshot, ...],
    points: dict[float, RiskPoint],
    scorer: RiskScorer | None,
    *,
    since: datetime | None = None,
) -> int:
    """Write a row for each moment whose derivation differs from the newest row
    at its time.

    The derivation is the snapshot (its hash) *and* what the episode engine
    made of it: the grade and its reasons, which also depend on earlier
    records (onset, the fever waiver of a drug given since). So a retraction
    that changes only that context (an earlier fever withdrawn) is re-derived
    too. Equal to the newest row: nothing (idempotent). A new time, a change,
    or a return to an earlier derivation: a row with ``revision`` = the rows
    already at that time. The caller holds the patient's row lock (see
    :func:`grade_patient`), so no other run can add rows here meanwhile.
    """
    newest: dict[datetime, tuple[tuple[str, int, list[Any]], int]] = {}
    stored = select(
        Grade.evaluated_at, Grade.snapshot_hash, Grade.grade, Grade.reasons
    ).where(Grade.patient_id == patient_id, Grade.rule_set == rules.key)
    if since is not None:
        stored = stored.where(Grade.evaluated_at >= since)
    for at, digest, grade, reasons in session.execute(stored.order_by(Grade.id)):
        rows = newest.get(at, (("", 0, []), 0))[1]
        newest[at] = ((digest, grade, list(reasons)), rows + 1)
    new: list[dict[str, Any]] = []
    for obs in observations:
        snapshot = snapshots[obs.input_index]
        if since is not None and snapshot.at < since:
            continue  # untouched by the pending records: its row stands
        payload = snapshot_json(snapshot)
        digest = content_hash(payload)
        derived = (digest, obs.result.grade, [r.text for r in obs.result.reasons])
        current, rows = newest.get(snapshot.at, (None, 0))
        if derived == current:
            continue
        newest[snapshot.at] = (derived, rows + 1)
        result = obs.result
        point = points.get(obs.t_hours)
        new.append(
            {
                "patient_id": patient_id,
                "evaluated_at": snapshot.at,
                "t_hours": obs.t_hours,
                "rule_set": result.rule_set,
                "rule_set_version": rules.version,
                "grade": result.grade,
                "reasons": derived[2],
                "missing_inputs": list(result.missing_inputs),
                "flags": flag_details(result.flags),
                "snapshot": payload,
                "snapshot_hash": digest,
                "revision": rows,
                "risk_probability": None if point is None else point.probability,
                "risk_model": None if point is None or scorer is None else scorer.key,
                "risk_features": None if point is None else list(point.top_features),
            }
        )
    if new:  # one statement batch, no ORM objects (nothing reads them back)
        session.execute(insert(Grade), new)
    return len(new)


def _raise_alerts(
    session: Session,
    patient: Patient,
    decisions: tuple[AlertDecision, ...],
    push_urls: tuple[str, ...],
    now: datetime,
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
        alert = Alert(
            patient_id=patient.id,
            kind=str(d.kind),
            severity=str(d.severity),
            dedup_key=d.dedup_key,
            triggered_at=_at(patient, d.t_hours),
            grade=d.grade,
            rule_set=d.rule_set,
            reasons=list(d.reasons),
        )
        session.add(alert)
        if d.push and push_urls:
            session.flush()  # the alert's id, for its deliveries
            session.add_all(
                WebhookDelivery(alert_id=alert.id, url=url, next_attempt_at=now)
                for url in push_urls
            )
        raised.append(d)
    return tuple(raised)


def _at(patient: Patient, t_hours: float) -> datetime:
    return patient.infusion_at + timedelta(hours=t_hours)
