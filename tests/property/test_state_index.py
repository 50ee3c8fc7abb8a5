"""Property: the indexed state builder (bisection over records sorted by time)
picks exactly the values and sources the plain scan of every record picked,
ties included (equal times, equal values, windows closed at both ends)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from crsmon.domain.records import Measurement, OxygenRecord, PatientTimeline, Quantity
from crsmon.domain.state import StateSettings, snapshot_at
from crsmon.domain.vocab import OxygenDevice

INFUSION = datetime(2026, 3, 1, 8, tzinfo=UTC)
QUANTITIES = (
    Quantity.TEMPERATURE_C,
    Quantity.SBP_MMHG,
    Quantity.DBP_MMHG,
    Quantity.MAP_MMHG,
    Quantity.SPO2_PCT,
)
# Few distinct times and values, so ties and window edges are common.
times = st.integers(0, 40).map(lambda h: INFUSION + timedelta(hours=h))
values = st.sampled_from((37.0, 38.0, 38.5, 90.0))


@st.composite
def timelines(draw: st.DrawFn) -> PatientTimeline:
    measurements = tuple(
        Measurement(
            f"m{n}", draw(times), draw(st.sampled_from(QUANTITIES)), draw(values)
        )
        for n in range(draw(st.integers(0, 25)))
    )
    oxygen = tuple(
        OxygenRecord(f"o{n}", draw(times), draw(st.sampled_from(tuple(OxygenDevice))))
        for n in range(draw(st.integers(0, 6)))
    )
    return PatientTimeline(
        infusion_at=INFUSION,
        age_years_at_infusion=8.0,
        measurements=measurements,
        oxygen=oxygen,
    )


def _scan_latest(
    timeline: PatientTimeline, quantity: Quantity, at: datetime, hours: float
) -> Measurement | None:
    since = at - timedelta(hours=hours)
    found = [
        m
        for m in timeline.measurements
        if m.quantity is quantity and since <= m.observed_at <= at
    ]
    return max(found, key=lambda m: m.observed_at, default=None)


def _scan_highest(
    timeline: PatientTimeline, at: datetime, hours: float
) -> Measurement | None:
    since = at - timedelta(hours=hours)
    found = [
        m
        for m in timeline.measurements
        if m.quantity is Quantity.TEMPERATURE_C and since <= m.observed_at <= at
    ]
    return max(found, key=lambda m: (m.value, m.observed_at), default=None)


def _scan_oxygen(
    timeline: PatientTimeline, at: datetime, hours: float
) -> OxygenRecord | None:
    known = [o for o in timeline.oxygen if o.observed_at <= at]
    latest = max(known, key=lambda o: o.observed_at, default=None)
    if latest is None or at - latest.observed_at > timedelta(hours=hours):
        return None
    return latest


@settings(max_examples=300, deadline=None)
@given(timelines(), times)
def test_the_index_picks_what_the_scan_picks(
    timeline: PatientTimeline, at: datetime
) -> None:
    s = StateSettings()
    snapshot = snapshot_at(timeline, at, s)
    sources = dict(snapshot.sources)
    expected = {
        "temperature_c": _scan_highest(timeline, at, s.temperature_lookback_h),
        "sbp_mmhg": _scan_latest(timeline, Quantity.SBP_MMHG, at, 4.0),
        "dbp_mmhg": _scan_latest(timeline, Quantity.DBP_MMHG, at, 4.0),
        "map_mmhg": _scan_latest(timeline, Quantity.MAP_MMHG, at, 4.0),
        "spo2_pct": _scan_latest(timeline, Quantity.SPO2_PCT, at, s.spo2_max_age_h),
    }
    for name, record in expected.items():
        assert sources.get(name) == (None if record is None else record.record_id)
        value = getattr(snapshot.assessment, name)
        assert value == (None if record is None else record.value)
    oxygen = _scan_oxygen(timeline, at, s.oxygen_valid_h)
    assert sources.get("oxygen") == (None if oxygen is None else oxygen.record_id)
    shown = snapshot.assessment.oxygen
    assert (None if shown is None else shown.device) == (
        None if oxygen is None else oxygen.device
    )
