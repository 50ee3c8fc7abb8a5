"""Spec: the state builder turns timed records into the snapshot at time t.

Each timeline is a table of records: ``at`` in hours since infusion, the record
``kind`` and its ``value`` (a number, a device, a drug or a finding). The
expectations say what the snapshot at a given hour holds, and from which record.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from spec_tables import parse_table

from crsmon.domain import ASTCT_2019, grade_assessment, grade_episode
from crsmon.domain.records import (
    AttributionRecord,
    BolusRecord,
    DeathRecord,
    Finding,
    InfusionRecord,
    Measurement,
    OxygenRecord,
    PatientTimeline,
    Quantity,
    TreatmentRecord,
)
from crsmon.domain.state import (
    StateSettings,
    age_years_at,
    episode_until,
    record_times,
    snapshot_at,
)
from crsmon.domain.vocab import (
    OxygenDevice,
    TreatmentDrug,
    VasoactiveDrug,
    VasopressorDoseUnit,
)

INFUSION = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
SETTINGS = StateSettings()


def at(hours: float) -> datetime:
    """The time ``hours`` after the infusion."""
    return INFUSION + timedelta(hours=hours)


def timeline(
    table: str, *, age: float = 7.0, birth_date: date | None = None
) -> PatientTimeline:
    """A patient timeline from a table of records (see the module docstring)."""
    measurements, oxygen, infusions, boluses, treatments, attributions = (
        [], [], [], [], [], []
    )  # fmt: skip
    death = None
    starts: dict[str, InfusionRecord] = {}
    for i, row in enumerate(parse_table(table)):
        rid, when, kind, value = (
            f"r{i}",
            at(float(row["at"])),
            row["kind"],
            row["value"],
        )
        if kind in Quantity.__members__.values():
            measurements.append(Measurement(rid, when, Quantity(kind), float(value)))
        elif kind == "o2":
            device, _, flow = value.partition("@")
            oxygen.append(
                OxygenRecord(
                    rid, when, OxygenDevice(device), float(flow) if flow else None
                )
            )
        elif kind == "pressor_on":
            starts[value] = InfusionRecord(
                rid, VasoactiveDrug(value), 0.1, VasopressorDoseUnit.UG_KG_MIN, when
            )
        elif kind == "pressor_off":
            start = starts.pop(value)
            infusions.append(
                InfusionRecord(
                    start.record_id, start.drug, start.dose, start.unit,
                    start.started_at, when,
                )
            )  # fmt: skip
        elif kind == "bolus":
            boluses.append(BolusRecord(rid, when, for_hypotension=value == "bp"))
        elif kind == "drug":
            treatments.append(TreatmentRecord(rid, when, TreatmentDrug(value)))
        elif kind == "attrib":
            finding, _, hours = value.partition("@")
            end = at(float(hours)) if hours else None
            attributions.append(AttributionRecord(rid, Finding(finding), when, end))
        elif kind == "death":
            death = DeathRecord(rid, when, attributable_to_crs=value == "crs")
        else:
            raise ValueError(kind)
    infusions += starts.values()
    return PatientTimeline(
        infusion_at=INFUSION,
        age_years_at_infusion=age,
        birth_date=birth_date,
        measurements=tuple(measurements),
        oxygen=tuple(oxygen),
        infusions=tuple(infusions),
        boluses=tuple(boluses),
        treatments=tuple(treatments),
        attributions=tuple(attributions),
        death=death,
    )


FEVER_AFTER_ANTIPYRETIC = """
| at | kind          | value         |
| 10 | temperature_c | 39.2          |
| 11 | drug          | acetaminophen |
| 12 | temperature_c | 37.1          |
| 40 | temperature_c | 37.0          |
"""


def test_the_highest_temperature_of_24_hours_is_used() -> None:
    """A fever stays in the snapshot for 24 h, whatever readings follow it."""
    patient = timeline(FEVER_AFTER_ANTIPYRETIC)
    snap = snapshot_at(patient, at(12), SETTINGS)
    assert snap.assessment.temperature_c == 39.2
    assert dict(snap.sources)["temperature_c"] == "r0"
    assert snapshot_at(patient, at(34), SETTINGS).assessment.temperature_c == 39.2
    later = snapshot_at(patient, at(34.01), SETTINGS)
    assert later.assessment.temperature_c == 37.1


def test_no_temperature_in_the_window_is_not_recorded() -> None:
    """After the look-back, temperature is missing, not normal."""
    patient = timeline(FEVER_AFTER_ANTIPYRETIC)
    snap = snapshot_at(patient, at(70), SETTINGS)
    assert snap.assessment.temperature_c is None
    assert (
        "temperature_c" in grade_assessment(snap.assessment, ASTCT_2019).missing_inputs
    )


BLOOD_PRESSURE = """
| at | kind     | value |
| 0  | sbp_mmhg | 100   |
| 0  | dbp_mmhg | 60    |
| 5  | sbp_mmhg | 82    |
"""


@pytest.mark.parametrize(
    ("hours", "sbp", "dbp"),
    [(0, 100, 60), (4, 100, 60), (4.5, None, None), (5, 82, None), (9, 82, None),
     (9.5, None, None)],
)  # fmt: skip
def test_blood_pressure_is_the_latest_within_4_hours(
    hours: float, sbp: float | None, dbp: float | None
) -> None:
    """SBP and DBP are each the latest reading of the last 4 h, or not recorded."""
    snap = snapshot_at(timeline(BLOOD_PRESSURE), at(hours), SETTINGS).assessment
    assert (snap.sbp_mmhg, snap.dbp_mmhg) == (sbp, dbp)


OXYGEN = """
| at | kind | value            |
| 0  | o2   | nasal_cannula@2  |
| 6  | o2   | non_rebreather_mask@15 |
| 8  | o2   | room_air         |
"""


@pytest.mark.parametrize(
    ("hours", "device"),
    [(-1, None), (0, "nasal_cannula"), (5.9, "nasal_cannula"), (6, "non_rebreather_mask"),
     (8, "room_air"), (20, "room_air"), (20.5, None)],
)  # fmt: skip
def test_oxygen_is_the_latest_support_for_12_hours(
    hours: float, device: str | None
) -> None:
    """Oxygen support holds until changed or for 12 h; then it is not recorded."""
    oxygen = snapshot_at(timeline(OXYGEN), at(hours), SETTINGS).assessment.oxygen
    assert (None if oxygen is None else oxygen.device) == device


PRESSORS = """
| at | kind        | value          |
| 10 | pressor_on  | norepinephrine |
| 12 | pressor_on  | epinephrine    |
| 14 | pressor_off | epinephrine    |
| 30 | pressor_off | norepinephrine |
"""


@pytest.mark.parametrize(
    ("hours", "drugs"),
    [(9, ()), (10, ("norepinephrine",)), (13, ("norepinephrine", "epinephrine")),
     (14, ("norepinephrine",)), (30, ())],
)  # fmt: skip
def test_vasopressors_are_those_running_at_t(
    hours: float, drugs: tuple[str, ...]
) -> None:
    """An infusion counts from its start until its stop (A9: concurrent agents)."""
    snap = snapshot_at(timeline(PRESSORS), at(hours), SETTINGS).assessment
    assert tuple(v.drug for v in snap.vasopressors) == drugs


BOLUS = """
| at | kind  | value |
| 2  | bolus | bp    |
| 3  | bolus | maint |
"""


@pytest.mark.parametrize(
    ("hours", "counted"), [(1, False), (2, True), (8, True), (8.01, False)]
)
def test_a_bolus_for_hypotension_counts_for_6_hours(
    hours: float, counted: bool
) -> None:
    """Only a bolus given for blood pressure counts, and only for 6 h."""
    snap = snapshot_at(timeline(BOLUS), at(hours), SETTINGS).assessment
    assert snap.iv_fluid_bolus_for_hypotension is counted


ATTRIBUTION = """
| at | kind   | value          |
| 5  | attrib | fever@20       |
| 6  | attrib | hypoxia        |
| 30 | death  | other          |
"""


def test_attributions_apply_while_they_last_and_death_from_its_time() -> None:
    """A clinician's attribution holds from its start until its end; death from then."""
    patient = timeline(ATTRIBUTION)
    early, mid, late = (
        snapshot_at(patient, at(h), SETTINGS).assessment for h in (4, 10, 30)
    )
    assert not early.fever_attributable_to_other_cause
    assert mid.fever_attributable_to_other_cause
    assert mid.hypoxia_attributable_to_other_cause
    assert not late.fever_attributable_to_other_cause
    assert late.hypoxia_attributable_to_other_cause
    assert (mid.death, late.death, late.death_attributable_to_crs) == (
        False,
        True,
        False,
    )
    assert record_times(patient, at(40)) == [at(5), at(6), at(20), at(30)]


def test_age_is_exact_from_a_birth_date() -> None:
    """An infant's age comes from the birth date in days, not from whole years."""
    patient = timeline("| at | kind | value |", birth_date=date(2026, 2, 20))
    assert age_years_at(patient, at(0)) == pytest.approx(9 / 365.25)
    older = timeline("| at | kind | value |", age=4.0)
    assert age_years_at(older, at(24 * 365.25)) == pytest.approx(5.0)


def test_age_needs_a_birth_date_or_an_age() -> None:
    """A timeline without either cannot be graded (age drives the thresholds)."""
    patient = PatientTimeline(infusion_at=INFUSION)
    with pytest.raises(ValueError, match="birth date or an age"):
        age_years_at(patient, at(0))


COURSE = """
| at | kind          | value           |
| 2  | temperature_c | 37.0            |
| 20 | temperature_c | 38.9            |
| 24 | sbp_mmhg      | 78              |
| 24 | bolus         | bp              |
| 30 | drug          | tocilizumab     |
| 32 | pressor_on    | norepinephrine  |
| 33 | temperature_c | 37.2            |
| 44 | temperature_c | 37.0            |
| 50 | pressor_off   | norepinephrine  |
| 60 | temperature_c | 36.9            |
"""


def test_single_value_messages_grade_as_one_episode() -> None:
    """Records arriving one value at a time grade like the whole picture (§5)."""
    episode, snapshots = episode_until(timeline(COURSE, age=9.0), at(100), SETTINGS)
    assert [s.at for s in snapshots] == record_times(timeline(COURSE), at(100))
    assert episode.treatments[0].t_hours == 30
    result = grade_episode(episode, ASTCT_2019)
    assert result.onset_t_hours == 20
    assert result.grade == 3  # tocilizumab after onset waives fever; pressor -> 3
    assert result.max_grade_t_hours == 32
    by_time = {o.t_hours: o.result.grade for o in result.observations}
    assert by_time[24] == 2  # fever from 20 h still within 24 h, plus the bolus
    assert by_time[33] == 3  # afebrile on a pressor after tocilizumab (R3)
    assert by_time[50] == 0  # pressor stopped, fever out of the window: A4
