"""The state builder: a patient's assessment snapshot at any time from timed records.

Real feeds send one or a few values per message, so a grade at time t must be
built from what was known at t. The look-back rules are :class:`StateSettings`
(project conventions [C], each documented in docs/grading.md):

Windows include both ends (a reading exactly 4 h old is still "within 4 h").

- temperature: the highest recorded in the 24 h up to t, so a fever does not
  vanish because a reading taken after an antipyretic came in;
- blood pressure and SpO2: the latest within 4 h;
- oxygen: the latest recorded support, valid until changed or for 12 h;
- vasopressors: those running at t (started, not yet stopped);
- a fluid bolus for hypotension: counts for 6 h;
- attributions: from their start until they end; a death from its time on.

A value older than its look-back is *not recorded*: the grader reports it in
``missing_inputs`` instead of reading it as normal. Each snapshot names the
record behind every value it used (``sources``).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Generic, TypeVar

from crsmon.domain.records import (
    BolusRecord,
    Finding,
    InfusionRecord,
    Measurement,
    OxygenRecord,
    PatientTimeline,
    Quantity,
)
from crsmon.domain.snapshot import (
    Assessment,
    Episode,
    OxygenSupport,
    Treatment,
    VasopressorInfusion,
)

_DAYS_PER_YEAR = 365.25
_HOUR = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class StateSettings:
    """How long each kind of record stays current (documented defaults)."""

    temperature_lookback_h: float = 24.0
    blood_pressure_max_age_h: float = 4.0
    spo2_max_age_h: float = 4.0
    oxygen_valid_h: float = 12.0
    bolus_effect_h: float = 6.0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The assessment at ``at``, and the record ids each of its values came from."""

    at: datetime
    assessment: Assessment
    sources: tuple[tuple[str, str], ...]


def hours_since_infusion(timeline: PatientTimeline, at: datetime) -> float:
    """Hours from the infusion to ``at`` (negative before it)."""
    return (at - timeline.infusion_at) / _HOUR


def age_years_at(timeline: PatientTimeline, at: datetime) -> float:
    """Decimal age at ``at``: from the birth date when known, else from the infusion.

    Raises:
        ValueError: the timeline has neither a birth date nor an age at infusion.
    """
    if timeline.birth_date is not None:
        return (at.date() - timeline.birth_date).days / _DAYS_PER_YEAR
    if timeline.age_years_at_infusion is None:
        raise ValueError("the timeline needs a birth date or an age at infusion")
    elapsed_days = (at - timeline.infusion_at) / timedelta(days=1)
    return timeline.age_years_at_infusion + elapsed_days / _DAYS_PER_YEAR


R = TypeVar("R", Measurement, OxygenRecord)


@dataclass(frozen=True, slots=True)
class _Series(Generic[R]):
    """Records of one kind sorted by time (stable: equal times keep the
    timeline's order), with their times, for window look-ups by bisection."""

    times: tuple[datetime, ...]
    records: tuple[R, ...]

    def window(self, since: datetime, at: datetime) -> range:
        """Positions of the records with ``since <= time <= at``."""
        return range(bisect_left(self.times, since), bisect_right(self.times, at))

    def first_latest(self, upto: int) -> int | None:
        """Of the records before position ``upto``, the position of the first
        (in timeline order) of those at the latest time, as ``max`` by time
        over the timeline would choose."""
        if upto <= 0:
            return None
        return bisect_left(self.times, self.times[upto - 1], 0, upto)


@dataclass(frozen=True, slots=True)
class _Index:
    """A timeline's measurements by quantity, and its oxygen, sorted by time."""

    measurements: dict[Quantity, _Series[Measurement]]
    oxygen: _Series[OxygenRecord]

    @classmethod
    def of(cls, timeline: PatientTimeline) -> _Index:
        by_quantity: dict[Quantity, list[Measurement]] = {}
        for m in timeline.measurements:
            by_quantity.setdefault(m.quantity, []).append(m)
        series: dict[Quantity, _Series[Measurement]] = {}
        for quantity, found in by_quantity.items():
            ordered = sorted(found, key=lambda m: m.observed_at)
            series[quantity] = _Series(
                tuple(m.observed_at for m in ordered), tuple(ordered)
            )
        oxygen = sorted(timeline.oxygen, key=lambda o: o.observed_at)
        return cls(series, _Series(tuple(o.observed_at for o in oxygen), tuple(oxygen)))

    def series(self, quantity: Quantity) -> _Series[Measurement]:
        return self.measurements.get(quantity, _NO_MEASUREMENTS)


_NO_MEASUREMENTS: _Series[Measurement] = _Series((), ())


def _latest(
    index: _Index, quantity: Quantity, at: datetime, hours: float
) -> Measurement | None:
    series = index.series(quantity)
    found = series.window(at - timedelta(hours=hours), at)
    if not found:
        return None
    first = series.first_latest(found.stop)
    return None if first is None else series.records[first]


def _highest_temperature(
    index: _Index, at: datetime, hours: float
) -> Measurement | None:
    series = index.series(Quantity.TEMPERATURE_C)
    window = series.window(at - timedelta(hours=hours), at)
    found = series.records[window.start : window.stop]
    # Ties on value go to the latest reading, so the source is the most recent.
    return max(found, key=lambda m: (m.value, m.observed_at), default=None)


def _oxygen(index: _Index, at: datetime, hours: float) -> OxygenRecord | None:
    series = index.oxygen
    first = series.first_latest(bisect_right(series.times, at))
    if first is None:
        return None
    latest = series.records[first]
    if at - latest.observed_at > timedelta(hours=hours):
        return None
    return latest


def _attributed(timeline: PatientTimeline, finding: Finding, at: datetime) -> bool:
    return any(
        a.finding is finding
        and a.start_at <= at
        and (a.end_at is None or at < a.end_at)
        for a in timeline.attributions
    )


def _running_infusions(timeline: PatientTimeline, at: datetime) -> list[InfusionRecord]:
    running = (
        i
        for i in timeline.infusions
        if i.started_at <= at and (i.stopped_at is None or at < i.stopped_at)
    )
    return sorted(running, key=lambda i: (i.started_at, i.record_id))


def _recent_boluses(
    timeline: PatientTimeline, at: datetime, hours: float
) -> list[BolusRecord]:
    since = at - timedelta(hours=hours)
    return sorted(
        (
            b
            for b in timeline.boluses
            if b.for_hypotension and since <= b.given_at <= at
        ),
        key=lambda b: b.given_at,
    )


def snapshot_at(
    timeline: PatientTimeline, at: datetime, settings: StateSettings
) -> Snapshot:
    """The assessment snapshot of the patient at ``at``, built from records up to it."""
    return _snapshot_at(timeline, _Index.of(timeline), at, settings)


def _snapshot_at(
    timeline: PatientTimeline, index: _Index, at: datetime, settings: StateSettings
) -> Snapshot:
    sources: dict[str, str] = {}

    def used(name: str, record: Measurement | None) -> float | None:
        if record is None:
            return None
        sources[name] = record.record_id
        return record.value

    s = settings
    temperature = used(
        "temperature_c", _highest_temperature(index, at, s.temperature_lookback_h)
    )
    bp = {
        q.value: used(q.value, _latest(index, q, at, s.blood_pressure_max_age_h))
        for q in (Quantity.SBP_MMHG, Quantity.DBP_MMHG, Quantity.MAP_MMHG)
    }
    spo2 = used("spo2_pct", _latest(index, Quantity.SPO2_PCT, at, s.spo2_max_age_h))
    oxygen = _oxygen(index, at, s.oxygen_valid_h)
    if oxygen is not None:
        sources["oxygen"] = oxygen.record_id
    running = _running_infusions(timeline, at)
    if running:
        sources["vasopressors"] = ",".join(i.record_id for i in running)
    boluses = _recent_boluses(timeline, at, s.bolus_effect_h)
    if boluses:
        sources["iv_fluid_bolus_for_hypotension"] = boluses[-1].record_id
    death = timeline.death if timeline.death and timeline.death.died_at <= at else None
    if death is not None:
        sources["death"] = death.record_id
    assessment = Assessment(
        age_years=age_years_at(timeline, at),
        t_hours=hours_since_infusion(timeline, at),
        weight_kg=timeline.weight_kg,
        temperature_c=temperature,
        fever_attributable_to_other_cause=_attributed(timeline, Finding.FEVER, at),
        sbp_mmhg=bp["sbp_mmhg"],
        dbp_mmhg=bp["dbp_mmhg"],
        map_mmhg=bp["map_mmhg"],
        iv_fluid_bolus_for_hypotension=bool(boluses),
        vasopressors=tuple(
            VasopressorInfusion(i.drug, i.dose, i.unit) for i in running
        ),
        hypotension_attributable_to_other_cause=_attributed(
            timeline, Finding.HYPOTENSION, at
        ),
        oxygen=(
            None
            if oxygen is None
            else OxygenSupport(oxygen.device, oxygen.flow_l_min, oxygen.fio2)
        ),
        oxygen_for_comfort_only=oxygen is not None and oxygen.for_comfort_only,
        hypoxia_attributable_to_other_cause=_attributed(timeline, Finding.HYPOXIA, at),
        spo2_pct=spo2,
        death=death is not None,
        death_attributable_to_crs=None if death is None else death.attributable_to_crs,
    )
    return Snapshot(
        at=at, assessment=assessment, sources=tuple(sorted(sources.items()))
    )


def record_times(timeline: PatientTimeline, until: datetime) -> list[datetime]:
    """Every distinct time up to ``until`` at which the patient's state changed."""
    times = {m.observed_at for m in timeline.measurements}
    times |= {o.observed_at for o in timeline.oxygen}
    times |= {i.started_at for i in timeline.infusions}
    times |= {i.stopped_at for i in timeline.infusions if i.stopped_at is not None}
    times |= {b.given_at for b in timeline.boluses}
    times |= {a.start_at for a in timeline.attributions}
    times |= {a.end_at for a in timeline.attributions if a.end_at is not None}
    if timeline.death is not None:
        times.add(timeline.death.died_at)
    return sorted(t for t in times if t <= until)


def episode_until(
    timeline: PatientTimeline,
    until: datetime,
    settings: StateSettings,
    extra_times: Iterable[datetime] = (),
) -> tuple[Episode, tuple[Snapshot, ...]]:
    """The episode the grader reads: a snapshot at every record time up to ``until``.

    ``extra_times`` adds moments that must be graded even if no current record
    falls on them, such as the times of earlier grades whose record was since
    retracted, so those grades are re-derived rather than left standing.
    Treatments become episode treatments (hours since infusion), so the episode
    engine derives the fever waiver (§5.3) itself.
    """
    times = set(record_times(timeline, until)) | {t for t in extra_times if t <= until}
    index = _Index.of(timeline)
    snapshots = tuple(_snapshot_at(timeline, index, t, settings) for t in sorted(times))
    episode = Episode(
        age_years=age_years_at(timeline, timeline.infusion_at),
        observations=tuple(s.assessment for s in snapshots),
        treatments=tuple(
            Treatment(hours_since_infusion(timeline, tr.given_at), tr.drug)
            for tr in timeline.treatments
            if tr.given_at <= until
        ),
    )
    return episode, snapshots
