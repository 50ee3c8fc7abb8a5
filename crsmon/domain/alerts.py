"""Which alerts a graded episode calls for (grading.md, "Alerts (decided by the core)").

The service grades a patient's history as an episode and stores the alerts; this
module only decides them. Each decision's ``dedup_key`` names the *condition*, not
the message: it is built from course onsets, grades, gap starts, field names and
the caller's record ids, so grading the same history again, or the same history
with later observations added, gives the same keys and the store can refuse a
second copy. Keys never hold a patient identifier; the caller scopes them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from itertools import groupby, pairwise

from crsmon.domain.catalog import resolve_rule_set
from crsmon.domain.explain import num
from crsmon.domain.quality import GRADED_PLAUSIBILITY_FIELDS
from crsmon.domain.results import CrsCourse, EpisodeResult, FlagKind, ObservationGrade
from crsmon.domain.snapshot import Episode


class AlertKind(StrEnum):
    """What an alert is about; the order here breaks ties between alerts at one time."""

    CRS_ONSET = "crs_onset"
    CRS_ESCALATION = "crs_escalation"
    SEVERE_CRS = "severe_crs"
    CRS_DEATH = "crs_death"
    POSSIBLE_MASKED_CRS = "possible_masked_crs"
    HYPOXEMIA_WITHOUT_SUPPORT = "hypoxemia_without_support"
    DATA_QUALITY = "data_quality"
    STALE_MONITORING = "stale_monitoring"
    HIGH_RISK = "high_risk"


class Severity(StrEnum):
    """How urgently a person should look at an alert."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


SEVERE_GRADE = 3
DEATH_GRADE = 5
PUSH_KINDS = frozenset({AlertKind.SEVERE_CRS, AlertKind.CRS_DEATH, AlertKind.HIGH_RISK})
"""Kinds worth a webhook: one push per severe course, per death, per risk run."""

# These alerts carry the code of the monitoring flag they are raised from.
_FLAG_ALERTS = (AlertKind.POSSIBLE_MASKED_CRS, AlertKind.HYPOXEMIA_WITHOUT_SUPPORT)
_KIND_ORDER = {kind: i for i, kind in enumerate(AlertKind)}
_GRADE_FLOORS = {AlertKind.SEVERE_CRS: SEVERE_GRADE, AlertKind.CRS_DEATH: DEATH_GRADE}


@dataclass(frozen=True, slots=True)
class RiskSignal:
    """One risk-model prediction: ``probability`` of severe CRS within ``horizon_h``."""

    t_hours: float
    horizon_h: float
    probability: float
    threshold: float
    model_version: str
    reasons: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """Refuse a probability, threshold or horizon that cannot be meant."""
        if not (0.0 <= self.probability <= 1.0 and 0.0 <= self.threshold <= 1.0):
            raise ValueError("probability and threshold must be between 0 and 1")
        if not self.horizon_h > 0:
            raise ValueError("horizon_h must be positive")

    @property
    def high(self) -> bool:
        """The prediction reaches its threshold."""
        return self.probability >= self.threshold


@dataclass(frozen=True, slots=True)
class RecordFlag:
    """A data-quality flag the intake stored on one record (grading.md §4.4).

    Values the grader reads (temperature, blood pressure, SpO2) are judged again
    by the grader, with the patient's age; flags on the other fields (labs,
    heart and respiratory rate) reach an alert only this way.
    """

    record_id: str
    t_hours: float
    field: str
    message: str


@dataclass(frozen=True, slots=True)
class StaleGap:
    """A stretch of monitored time with no temperature or blood pressure."""

    start_h: float
    end_h: float
    open: bool
    """The gap still runs at ``as_of`` (no later measurement yet)."""

    @property
    def dedup_key(self) -> str:
        """``stale_monitoring:gap@<start>``: one alert per gap, however long it runs."""
        return f"{AlertKind.STALE_MONITORING}:gap@{num(self.start_h)}"


@dataclass(frozen=True, slots=True)
class AlertDecision:
    """One alert the service should store once, under ``dedup_key``, per patient."""

    kind: AlertKind
    severity: Severity
    dedup_key: str
    t_hours: float
    grade: int | None
    rule_set: str
    reasons: tuple[str, ...]
    record_id: str | None = None

    @property
    def push(self) -> bool:
        """Worth a webhook: severe CRS, a CRS death or a high risk."""
        return self.kind in PUSH_KINDS


_FIXED_SEVERITY = {
    AlertKind.POSSIBLE_MASKED_CRS: Severity.WARNING,
    AlertKind.HYPOXEMIA_WITHOUT_SUPPORT: Severity.WARNING,
    AlertKind.DATA_QUALITY: Severity.INFO,
    AlertKind.STALE_MONITORING: Severity.WARNING,
    AlertKind.HIGH_RISK: Severity.CRITICAL,
}


def _severity(kind: AlertKind, grade: int) -> Severity:
    """Fixed per kind, except grade alerts: critical from grade 3 on, else warning."""
    if kind in _FIXED_SEVERITY:
        return _FIXED_SEVERITY[kind]
    return Severity.CRITICAL if grade >= SEVERE_GRADE else Severity.WARNING


def _top(moment: tuple[ObservationGrade, ...]) -> ObservationGrade:
    # max() keeps the first of equal grades, so the choice is deterministic.
    return max(moment, key=lambda o: o.result.grade)


@dataclass(frozen=True, slots=True)
class _Context:
    result: EpisodeResult
    moments: tuple[tuple[ObservationGrade, ...], ...]
    window_h: float
    record_ids: Mapping[int, str]
    field_sources: Mapping[int, Mapping[str, str]]

    def record_behind(self, obs: ObservationGrade, field: str) -> str | None:
        """The record a flagged field came from, else the observation's record."""
        sources = self.field_sources.get(obs.input_index, {})
        root = field.split(".")[0]
        return (
            sources.get(field)
            or sources.get(root)
            or self.record_ids.get(obs.input_index)
        )

    def course_at(self, t: float) -> CrsCourse | None:
        """The course a moment belongs to, as the engine saw it when it was graded."""
        for course in self.result.courses:
            # Until resolution is confirmed (window_h of grade 0) the course was
            # open; ending it at the resolution time would move keys as data grows.
            resolved = course.resolution_t_hours
            end = math.inf if resolved is None else resolved + self.window_h
            if course.onset_t_hours <= t < end:
                return course
        return None

    def decide(
        self,
        kind: AlertKind,
        key: str,
        obs: ObservationGrade,
        *why: str,
        record_id: str | None = None,
    ) -> AlertDecision:
        """A decision triggered by ``obs``, explained by ``why`` or else its reasons."""
        grade, rule_set = obs.result.grade, self.result.rule_set
        why = why or tuple(r.text for r in obs.result.reasons)
        rid = record_id or self.record_ids.get(obs.input_index)
        sev = _severity(kind, grade)
        return AlertDecision(kind, sev, key, obs.t_hours, grade, rule_set, why, rid)


def decide_alerts(
    result: EpisodeResult,
    *,
    record_ids: Mapping[int, str] | None = None,
    field_sources: Mapping[int, Mapping[str, str]] | None = None,
    vital_times_h: Sequence[float] = (),
    as_of_h: float | None = None,
    stale_after_h: float = 8.0,
    monitoring_days: float = 14.0,
    monitored_h: Sequence[tuple[float, float]] | None = None,
    record_flags: Sequence[RecordFlag] = (),
    risk_signals: Sequence[RiskSignal] = (),
) -> tuple[AlertDecision, ...]:
    """The alerts a graded episode calls for, in time order, each with its dedup key.

    ``monitored_h`` are the (start, end) hours since infusion when the patient was
    under inpatient monitoring (care-unit stays, ended by discharge or death);
    None means all the time. Stale-monitoring gaps count only monitored time.

    Raises:
        ValueError: a stale setting is out of range, or the rule set is unknown.
    """
    by_time = groupby(result.observations, key=lambda o: o.t_hours)
    moments = tuple(tuple(group) for _, group in by_time)
    window = resolve_rule_set(result.rule_set).resolution_window_h
    ctx = _Context(result, moments, window, record_ids or {}, field_sources or {})
    found = [*_grade_alerts(ctx), *_quality_alerts(ctx)]
    found += _record_flag_alerts(result.rule_set, record_flags)
    for kind in _FLAG_ALERTS:
        found += _flag_alerts(ctx, kind)
    gaps = stale_gaps(
        vital_times_h,
        as_of_h=as_of_h,
        stale_after_h=stale_after_h,
        monitoring_days=monitoring_days,
        monitored_h=monitored_h,
    )
    found += (
        _stale_decision(result.rule_set, g, stale_after_h, monitoring_days * 24)
        for g in gaps
    )
    found += _risk_alerts(result.rule_set, risk_signals)
    found.sort(key=lambda d: (d.t_hours, _KIND_ORDER[d.kind], d.dedup_key))
    # A grader flag and an intake flag on the same record and field are one alert.
    seen: set[tuple[AlertKind, str]] = set()
    unique = []
    for d in found:
        if (d.kind, d.dedup_key) not in seen:
            seen.add((d.kind, d.dedup_key))
            unique.append(d)
    return tuple(unique)


def vital_sign_times(episode: Episode) -> tuple[float, ...]:
    """Times of the observations that recorded a temperature or a blood pressure."""
    times: list[float] = []
    for o in episode.observations:
        found = (o.temperature_c, o.temperature_raw, o.sbp_mmhg, o.dbp_mmhg, o.map_mmhg)
        if o.t_hours is not None and any(v is not None for v in found):
            times.append(o.t_hours)
    return tuple(sorted(times))


def _grade_alerts(ctx: _Context) -> Iterator[AlertDecision]:
    """Onset, escalation, severe CRS and death: each once per course (and grade)."""
    for course in ctx.result.courses:
        scope = f"course@{num(course.onset_t_hours)}"
        tops = [_top(m) for m in ctx.moments if ctx.course_at(m[0].t_hours) == course]
        yield ctx.decide(AlertKind.CRS_ONSET, f"crs_onset:{scope}", tops[0])
        reached = tops[0].result.grade
        for top in tops[1:]:
            if top.result.grade > reached:
                reached = top.result.grade
                key = f"crs_escalation:{scope}:grade={reached}"
                yield ctx.decide(AlertKind.CRS_ESCALATION, key, top)
        for kind, floor in _GRADE_FLOORS.items():
            first = next((o for o in tops if o.result.grade >= floor), None)
            if first is not None:
                yield ctx.decide(kind, f"{kind}:{scope}", first)


def _flag_alerts(ctx: _Context, kind: AlertKind) -> Iterator[AlertDecision]:
    """A monitoring flag once per course, or outside courses once per run of moments."""
    seen: set[str] = set()
    run: str | None = None
    for moment in ctx.moments:
        t = moment[0].t_hours
        course = ctx.course_at(t)
        flagged = [o for o in moment if kind in o.result.flag_codes]
        if course is not None:
            run, scope = None, f"course@{num(course.onset_t_hours)}"
        elif flagged:
            run = scope = run or f"run@{num(t)}"
        else:
            run = None
            continue
        key = f"{kind}:{scope}"
        if flagged and key not in seen:
            seen.add(key)
            why = [f.message for f in flagged[0].result.flags if f.code == kind]
            yield ctx.decide(kind, key, flagged[0], *why)


def _quality_alerts(ctx: _Context) -> Iterator[AlertDecision]:
    """Data-quality flags once per record and field (without a record id, per time)."""
    seen: set[str] = set()
    for obs in ctx.result.observations:
        fields: dict[str, list[str]] = {}
        for flag in obs.result.flags:
            if flag.kind is FlagKind.DATA_QUALITY:
                fields.setdefault(flag.field or flag.code, []).append(flag.message)
        for name, messages in fields.items():
            # Keyed by the record behind the field, so a value carried into later
            # snapshots by a look-back raises its alert once.
            rid = ctx.record_behind(obs, name)
            ref = f"t@{num(obs.t_hours)}" if rid is None else f"record={rid}"
            key = f"{AlertKind.DATA_QUALITY}:{ref}:{name}"
            if key not in seen:
                seen.add(key)
                yield ctx.decide(
                    AlertKind.DATA_QUALITY, key, obs, *messages, record_id=rid
                )


def stale_gaps(
    vital_times_h: Sequence[float],
    *,
    as_of_h: float | None,
    stale_after_h: float = 8.0,
    monitoring_days: float = 14.0,
    monitored_h: Sequence[tuple[float, float]] | None = None,
) -> tuple[StaleGap, ...]:
    """Monitored stretches longer than ``stale_after_h`` without temperature or BP.

    Counted from infusion (which opens the first gap) to ``as_of_h`` ("now",
    which closes the last one, still open), within the first ``monitoring_days``
    and, when given, within the monitored (start, end) spans. Spans that touch
    or overlap are one span (a transfer between units does not stop the clock);
    a gap split by a discharge is judged per span, so a readmission starts its
    own gap.

    Raises:
        ValueError: a setting is out of range.
    """
    if not (stale_after_h > 0 and monitoring_days >= 0):
        raise ValueError("stale_after_h must be positive, monitoring_days >= 0")
    window_end = monitoring_days * 24
    points = sorted({0.0, *(t for t in vital_times_h if t >= 0)})
    now = as_of_h if as_of_h is not None and as_of_h > points[-1] else None
    spans = [(0.0, math.inf)] if monitored_h is None else _merged(monitored_h)
    found = []
    for start, stop in pairwise(points if now is None else [*points, now]):
        for span_start, span_end in spans:
            lo, hi = max(start, span_start), min(stop, span_end, window_end)
            if hi - lo > stale_after_h:
                is_open = stop == now and hi == now
                found.append(StaleGap(lo, hi, is_open))
    return tuple(found)


def _merged(spans: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Sorted spans with touching or overlapping ones joined."""
    merged: list[tuple[float, float]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _stale_decision(
    rule_set: str, gap: StaleGap, after_h: float, window_h: float
) -> AlertDecision:
    end = num(gap.end_h)
    until = f"up to {end} h (now)" if gap.open else f"until {end} h"
    text = (
        f"no temperature or blood pressure recorded from {num(gap.start_h)} h "
        f"{until}: {num(gap.end_h - gap.start_h)} h > {after_h:g} h, within the "
        f"first {num(window_h)} h after infusion"
    )
    kind = AlertKind.STALE_MONITORING
    return AlertDecision(
        kind, Severity.WARNING, gap.dedup_key, gap.start_h, None, rule_set, (text,)
    )


def _record_flag_alerts(
    rule_set: str, flags: Sequence[RecordFlag]
) -> Iterator[AlertDecision]:
    """Intake flags on fields the grader does not judge: once per record and field."""
    messages: dict[tuple[str, str], list[str]] = {}
    first: dict[tuple[str, str], RecordFlag] = {}
    for flag in flags:
        if flag.field in GRADED_PLAUSIBILITY_FIELDS:
            continue
        at = (flag.record_id, flag.field)
        first.setdefault(at, flag)
        messages.setdefault(at, []).append(flag.message)
    for (rid, name), flag in first.items():
        kind = AlertKind.DATA_QUALITY
        key = f"{kind}:record={rid}:{name}"
        why = tuple(messages[rid, name])
        yield AlertDecision(
            kind, Severity.INFO, key, flag.t_hours, None, rule_set, why, rid
        )


def _risk_alerts(
    rule_set: str, signals: Sequence[RiskSignal]
) -> Iterator[AlertDecision]:
    """High risk once per episode for each model and horizon: at the first
    prediction at or above its threshold. The signals end at the first grade
    >= 3 (the model predicts reaching it), so the episode is the time below it;
    a later dip and rise is the same risk, not a new alert."""
    ordered = sorted(
        signals, key=lambda s: (s.model_version, s.horizon_h, s.t_hours, s.probability)
    )
    for _, series in groupby(ordered, key=lambda s: (s.model_version, s.horizon_h)):
        first = next((s for s in series if s.high), None)
        if first is not None:
            yield _risk_decision(rule_set, first)


def _risk_decision(rule_set: str, s: RiskSignal) -> AlertDecision:
    kind, horizon = AlertKind.HIGH_RISK, num(s.horizon_h)
    key = f"{kind}:model={s.model_version}:horizon={horizon}"
    text = (
        f"risk model {s.model_version}: probability {s.probability:g} >= threshold "
        f"{s.threshold:g} within {horizon} h"
    )
    why = (text, *s.reasons)
    return AlertDecision(kind, Severity.CRITICAL, key, s.t_hours, None, rule_set, why)
