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

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields, is_dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, cast

from sqlalchemy import Table, func, insert, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from crsmon.db.models import (
    Alert,
    ClinicalRecord,
    Grade,
    Patient,
    UnitStay,
    WebhookDelivery,
)
from crsmon.db.repository import (
    MAX_BOUND,
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
from crsmon.domain.results import EpisodeResult
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


GRADES = cast(Table, Grade.__table__)
ALERTS = cast(Table, Alert.__table__)
DELIVERIES = cast(Table, WebhookDelivery.__table__)

_FIELDS: dict[type, tuple[str, ...]] = {}


def _field_names(kind: type) -> tuple[str, ...]:
    names = _FIELDS.get(kind)
    if names is None:
        names = _FIELDS[kind] = tuple(f.name for f in fields(kind))
    return names


def _plain(value: Any) -> Any:
    """A domain value as JSON-ready data: dataclasses as dicts of their fields,
    enums as their values, tuples as lists, sets sorted.

    What ``dataclasses.asdict`` and the same conversion give, without its deep
    copy of every leaf (a fifth of a regrade's time): the snapshot hash of a
    stored grade row must never change with the code that computes it.
    """
    if isinstance(value, Enum):
        return value.value
    if value is None or isinstance(value, str | int | float):
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, frozenset):
        return sorted(_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if is_dataclass(value) and not isinstance(value, type):
        return {n: _plain(getattr(value, n)) for n in _field_names(type(value))}
    raise TypeError(f"no JSON form for {type(value).__name__}")


def snapshot_json(snapshot: Snapshot) -> dict[str, Any]:
    """The snapshot a grade was computed from, with the record behind each value."""
    return {
        "at": snapshot.at.isoformat(),
        "assessment": _plain(snapshot.assessment),
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


@dataclass(frozen=True, slots=True)
class _Batch:
    """What a batch reads before grading: one statement each for all of its
    patients (not one per patient), grouped by patient."""

    patients: dict[int, Patient]
    pending: dict[int, list[_Pending]]
    records: dict[int, list[StoredRecord]]
    since: dict[int, datetime]
    graded_times: dict[int, list[datetime]]


def _read(session: Session, ids: list[int], rules: RuleSet, *, live: bool) -> _Batch:
    """Lock the patients' rows in id order (two batches never deadlock), then
    read their pending records, current records and graded times.

    Pending first, then the records, and only the pending records read are
    marked graded: a record committed in between would be graded again next
    run, never marked graded unread. The patient rows are locked FOR NO KEY
    UPDATE: grading runs (and claims, adjudications) wait for each other,
    while intake's foreign-key share lock never waits for grading.
    """
    patients = {
        p.id: p
        for p in session.scalars(
            select(Patient)
            .where(Patient.id.in_(ids))
            .order_by(Patient.id)
            .with_for_update(key_share=True)
            .execution_options(populate_existing=True)
        )
    }
    missing = [pid for pid in ids if pid not in patients]
    if missing:
        raise LookupError(f"patient {missing[0]} does not exist")
    pending = _pending(session, ids)
    records = current_stored(session, ids)
    # Only moments from the earliest time the pending records touch can
    # change: a snapshot reads records up to its time, and the episode carries
    # context forward (onset, waivers), never back. Earlier moments keep their
    # rows; a run with nothing pending (or a regrade) looks at every moment.
    since = affected_from(session, pending) if live else {}
    graded_times: dict[int, list[datetime]] = {pid: [] for pid in ids}
    for pid, at in session.execute(
        select(Grade.patient_id, Grade.evaluated_at)
        .where(Grade.patient_id.in_(ids), Grade.rule_set == rules.key)
        .distinct()
    ):
        graded_times[pid].append(at)
    return _Batch(patients, pending, records, since, graded_times)


def _prepare(
    batch: _Batch,
    patient_id: int,
    rules: RuleSet,
    *,
    now: datetime,
    state: StateSettings | None,
) -> _Prepared:
    patient = batch.patients[patient_id]
    pending = batch.pending[patient_id]
    records = batch.records[patient_id]
    timeline = timeline_from(patient, records)
    latest = max((r.occurred_at for r in pending), default=now)
    until = max(now, latest)  # a record a few minutes ahead of the server clock
    episode, snapshots = episode_until(
        timeline,
        until,
        state or StateSettings(),
        extra_times=batch.graded_times[patient_id],
    )
    return _Prepared(
        patient,
        records,
        timeline,
        batch.since.get(patient_id),
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


def _decide(
    prepared: _Prepared,
    points: dict[float, RiskPoint],
    stays: list[UnitStay],
    *,
    now: datetime,
    policy: AlertPolicy,
) -> tuple[AlertDecision, ...]:
    patient, timeline, result = prepared.patient, prepared.timeline, prepared.result
    scorer = policy.risk
    died_at = None if timeline.death is None else timeline.death.died_at
    return decide_alerts(
        result,
        field_sources={i: dict(s.sources) for i, s in enumerate(prepared.snapshots)},
        vital_times_h=vital_times_h(timeline),
        as_of_h=hours_since_infusion(timeline, now),
        stale_after_h=policy.stale_after_h,
        monitoring_days=policy.monitoring_days,
        monitored_h=monitored_spans(patient.infusion_at, stays, died_at),
        record_flags=record_flags(timeline, prepared.records),
        risk_signals=[] if scorer is None else scorer.signals(list(points.values())),
    )


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
    each read and write is one statement for the whole batch, and the risk
    model scores every patient's new moments in one call.

    Patients whose histories together exceed :data:`CHUNK_RECORDS` stored
    records are graded in chunks of consecutive ids, one after the other in
    the same transaction (locks still in id order): a batch's memory is
    bounded by the chunk, not by 32 patients' histories.

    Raises:
        LookupError: a patient that does not exist (the caller's transaction
            is to be rolled back; nothing of the batch is then written).
    """
    ids = sorted(set(patient_ids))
    runs: dict[int, GradingRun] = {}
    for chunk in _chunks(session, ids):
        runs |= _grade_chunk(
            session, chunk, rules, now=now, policy=policy, state=state, live=live
        )
    return runs


CHUNK_RECORDS = 20_000
"""Stored records (current, retracted and superseded alike) graded together at
most, unless one patient alone has more: in the worker each held about 4 KB
while its patient's episode was rebuilt (docs/performance.md)."""


def _chunks(session: Session, ids: list[int]) -> list[list[int]]:
    """``ids`` in runs of consecutive patients whose stored records add up to
    at most :data:`CHUNK_RECORDS` (a patient with more is a run of its own);
    one counting statement, none when a single patient is asked."""
    if len(ids) < 2:
        return [ids]
    sizes: dict[int, int] = {}
    for start in range(0, len(ids), MAX_BOUND):
        for pid, count in session.execute(
            select(ClinicalRecord.patient_id, func.count())
            .where(ClinicalRecord.patient_id.in_(ids[start : start + MAX_BOUND]))
            .group_by(ClinicalRecord.patient_id)
        ):
            sizes[pid] = count
    chunks: list[list[int]] = [[]]
    held = 0
    for pid in ids:
        size = sizes.get(pid, 0)
        if chunks[-1] and held + size > CHUNK_RECORDS:
            chunks.append([])
            held = 0
        chunks[-1].append(pid)
        held += size
    return chunks


def _grade_chunk(
    session: Session,
    ids: list[int],
    rules: RuleSet,
    *,
    now: datetime,
    policy: AlertPolicy,
    state: StateSettings | None,
    live: bool,
) -> dict[int, GradingRun]:
    """:func:`grade_patients` of one chunk (sorted ids)."""
    batch = _read(session, ids, rules, live=live)
    prepared = [_prepare(batch, pid, rules, now=now, state=state) for pid in ids]
    scorer = policy.risk
    scored: list[list[RiskPoint]] = (
        [[] for _ in prepared]
        if scorer is None
        else scorer.score_many([_request(p) for p in prepared])
    )
    points = [{p.t_hours: p for p in s} for s in scored]
    written = _write_grades(session, prepared, points, rules, scorer)
    if not live:
        return {pid: GradingRun(written[pid], (), 0) for pid in ids}
    stays: dict[int, list[UnitStay]] = {pid: [] for pid in ids}
    for stay in session.scalars(select(UnitStay).where(UnitStay.patient_id.in_(ids))):
        stays[stay.patient_id].append(stay)
    known = _known_alerts(session, ids)
    raised = {
        p.patient.id: _new_alerts(
            _decide(p, pts, stays[p.patient.id], now=now, policy=policy),
            known[p.patient.id],
        )
        for p, pts in zip(prepared, points, strict=True)
    }
    _insert_alerts(
        session,
        [(batch.patients[pid], d) for pid in ids for d in raised[pid]],
        policy.webhook_urls,
        now,
    )
    graded = _mark_graded(session, [i for p in prepared for i in p.pending_ids])
    return {
        pid: GradingRun(written[pid], tuple(raised[pid]), graded[pid]) for pid in ids
    }


def _mark_graded(session: Session, ids: list[int]) -> Counter[int]:
    """Mark the pending records the run read as graded; how many per patient."""
    graded: Counter[int] = Counter()
    for start in range(0, len(ids), MAX_BOUND):
        graded.update(
            session.scalars(
                update(ClinicalRecord)
                .where(
                    ClinicalRecord.id.in_(ids[start : start + MAX_BOUND]),
                    ClinicalRecord.grading_state == "pending",
                )
                .values(grading_state="graded", graded_at=_database_now(session))
                .returning(ClinicalRecord.patient_id)
                # Nothing in this session reads the state back: no in-Python
                # evaluation of the criteria over every loaded record.
                .execution_options(synchronize_session=False)
            )
        )
    return graded


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


@dataclass(frozen=True, slots=True)
class _Pending:
    """A pending record as a run needs it: when, and what it changes (no
    values: those come with the current records)."""

    id: int
    kind: str
    source_system: str
    occurred_at: datetime
    supersedes_id: int | None
    target_record_id: str | None
    """What a retraction withdraws; None for any other record."""


def _pending(session: Session, ids: list[int]) -> dict[int, list[_Pending]]:
    found: dict[int, list[_Pending]] = {pid: [] for pid in ids}
    rows = session.execute(
        select(
            ClinicalRecord.patient_id,
            ClinicalRecord.id,
            ClinicalRecord.kind,
            ClinicalRecord.source_system,
            ClinicalRecord.occurred_at,
            ClinicalRecord.supersedes_id,
        ).where(
            ClinicalRecord.patient_id.in_(ids),
            ClinicalRecord.grading_state == "pending",
        )
    ).all()
    retractions = [r.id for r in rows if r.kind == "retraction"]
    targets: dict[int, str] = {}
    for start in range(0, len(retractions), MAX_BOUND):  # rare: details only here
        for record_id, details in session.execute(
            select(ClinicalRecord.id, ClinicalRecord.details).where(
                ClinicalRecord.id.in_(retractions[start : start + MAX_BOUND])
            )
        ):
            targets[record_id] = str(details["target_record_id"])
    for pid, record_id, kind, source, at, supersedes in rows:
        found[pid].append(
            _Pending(record_id, kind, source, at, supersedes, targets.get(record_id))
        )
    return found


def affected_from(
    session: Session, pending: dict[int, list[_Pending]]
) -> dict[int, datetime]:
    """Per patient with pending records, the earliest time they change: their
    own times, and the times of the records a pending correction supersedes or
    a pending retraction withdraws."""
    times: dict[int, list[datetime]] = {
        pid: [r.occurred_at for r in rows] for pid, rows in pending.items() if rows
    }
    owner = {
        r.supersedes_id: pid
        for pid, rows in pending.items()
        for r in rows
        if r.supersedes_id is not None
    }
    superseded = list(owner)
    for start in range(0, len(superseded), MAX_BOUND):
        for record_id, at in session.execute(
            select(ClinicalRecord.id, ClinicalRecord.occurred_at).where(
                ClinicalRecord.id.in_(superseded[start : start + MAX_BOUND])
            )
        ):
            times[owner[record_id]].append(at)
    for pid, rows in pending.items():
        for r in rows:
            if r.target_record_id is not None:  # rare: one statement each
                times[pid] += session.scalars(
                    select(ClinicalRecord.occurred_at).where(
                        ClinicalRecord.source_system == r.source_system,
                        same_record(r.target_record_id),
                    )
                )
    return {pid: min(found) for pid, found in times.items()}


_Derived = tuple[str, int, list[Any]]


def _newest_rows(
    session: Session, prepared: list[_Prepared], rules: RuleSet
) -> dict[int, dict[datetime, tuple[_Derived, int]]]:
    """Per patient and time (from its ``since``), the newest stored row's
    derivation and how many rows there are: one statement for the batch."""
    newest: dict[int, dict[datetime, tuple[_Derived, int]]] = {
        p.patient.id: {} for p in prepared
    }
    whole = [p.patient.id for p in prepared if p.since is None]
    scopes: list[ColumnElement[bool]] = [Grade.patient_id.in_(whole)] if whole else []
    scopes += [
        (Grade.patient_id == p.patient.id) & (Grade.evaluated_at >= p.since)
        for p in prepared
        if p.since is not None
    ]
    stored = (
        select(
            Grade.patient_id,
            Grade.evaluated_at,
            Grade.snapshot_hash,
            Grade.grade,
            Grade.reasons,
        )
        .where(Grade.rule_set == rules.key, or_(*scopes))
        .order_by(Grade.id)
    )
    for pid, at, digest, grade, reasons in session.execute(stored):
        at_times = newest[pid]
        rows = at_times.get(at, (("", 0, []), 0))[1]
        at_times[at] = ((digest, grade, list(reasons)), rows + 1)
    return newest


def _write_grades(
    session: Session,
    prepared: list[_Prepared],
    points: list[dict[float, RiskPoint]],
    rules: RuleSet,
    scorer: RiskScorer | None,
) -> Counter[int]:
    """Write a row for each moment whose derivation differs from the newest row
    at its time; how many per patient (all in one statement batch).

    The derivation is the snapshot (its hash) *and* what the episode engine
    made of it: the grade and its reasons, which also depend on earlier
    records (onset, the fever waiver of a drug given since). So a retraction
    that changes only that context (an earlier fever withdrawn) is re-derived
    too. Equal to the newest row: nothing (idempotent). A new time, a change,
    or a return to an earlier derivation: a row with ``revision`` = the rows
    already at that time. The caller holds the patients' row locks (see
    :func:`grade_patients`), so no other run can add rows here meanwhile.
    """
    newest = _newest_rows(session, prepared, rules)
    new: list[dict[str, Any]] = []
    written: Counter[int] = Counter()
    for p, at_points in zip(prepared, points, strict=True):
        patient_id, since = p.patient.id, p.since
        at_times = newest[patient_id]
        for obs in p.result.observations:
            snapshot = p.snapshots[obs.input_index]
            if since is not None and snapshot.at < since:
                continue  # untouched by the pending records: its row stands
            payload = snapshot_json(snapshot)
            digest = content_hash(payload)
            result = obs.result
            derived = (digest, result.grade, [r.text for r in result.reasons])
            current, rows = at_times.get(snapshot.at, (None, 0))
            if derived == current:
                continue
            at_times[snapshot.at] = (derived, rows + 1)
            point = at_points.get(obs.t_hours)
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
                    "risk_model": None
                    if point is None or scorer is None
                    else scorer.key,
                    "risk_features": None
                    if point is None
                    else list(point.top_features),
                }
            )
            written[patient_id] += 1
    if new:  # one statement batch, Core not ORM (nothing reads the rows back)
        session.execute(insert(GRADES), new)
    return written


def _known_alerts(session: Session, ids: list[int]) -> dict[int, set[tuple[str, str]]]:
    known: dict[int, set[tuple[str, str]]] = {pid: set() for pid in ids}
    for pid, kind, key in session.execute(
        select(Alert.patient_id, Alert.kind, Alert.dedup_key).where(
            Alert.patient_id.in_(ids)
        )
    ):
        known[pid].add((kind, key))
    return known


def _new_alerts(
    decisions: tuple[AlertDecision, ...],
    known: set[tuple[str, str]],
) -> list[AlertDecision]:
    """The decisions not raised before (unique on kind and dedup key)."""
    raised = []
    for d in decisions:
        if (str(d.kind), d.dedup_key) in known:
            continue
        known.add((str(d.kind), d.dedup_key))
        raised.append(d)
    return raised


def _insert_alerts(
    session: Session,
    raised: list[tuple[Patient, AlertDecision]],
    push_urls: tuple[str, ...],
    now: datetime,
) -> None:
    """The batch's new alerts in one statement batch, and a webhook delivery
    per push alert and configured URL (the outbox) in another."""
    if not raised:
        return
    rows = [
        {
            "patient_id": patient.id,
            "kind": str(d.kind),
            "severity": str(d.severity),
            "dedup_key": d.dedup_key,
            "triggered_at": _at(patient, d.t_hours),
            "grade": d.grade,
            "rule_set": d.rule_set,
            "reasons": list(d.reasons),
        }
        for patient, d in raised
    ]
    pushed = [d.push for _, d in raised]
    if not (push_urls and any(pushed)):
        session.execute(insert(ALERTS), rows)
        return
    alert_ids = session.scalars(
        insert(ALERTS).returning(ALERTS.c.id, sort_by_parameter_order=True), rows
    ).all()
    session.execute(
        insert(DELIVERIES),
        [
            {"alert_id": alert_id, "url": url, "next_attempt_at": now}
            for alert_id, push in zip(alert_ids, pushed, strict=True)
            if push
            for url in push_urls
        ],
    )


def _at(patient: Patient, t_hours: float) -> datetime:
    return patient.infusion_at + timedelta(hours=t_hours)
