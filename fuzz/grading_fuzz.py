"""Atheris harness (T10b): structured input -> the pure grader (crsmon.domain).

A ``FuzzedDataProvider`` chooses a rule set (ASTCT 2019 under any convention
setting) and then one of two shapes, every value inside what the edge
accepts (the §4.4 reject bounds, times no earlier than the intake allows):

- an episode: a sequence of assessments (temperatures in °C or °F, blood
  pressure, vasopressors, oxygen, ICANS, organ toxicity, death) with the
  treatments given, graded by :func:`~crsmon.domain.episodes.grade_episode`,
  each assessment also on its own by
  :func:`~crsmon.domain.grading.grade_assessment`;
- a patient timeline of timed records (what the service stores), turned into
  snapshots by the state builder (:func:`~crsmon.domain.state.episode_until`)
  and graded.

Checks: no exception at all (the core declares none for valid input), every
grade in 0..4, and 5 only where a death was recorded, no non-finite number in
any result, one graded observation per input, courses that are consistent, and
the same result when an assessment is graded twice.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import fields, is_dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any, Protocol, TypeVar

from crsmon.domain.catalog import resolve_rule_set
from crsmon.domain.episodes import grade_episode
from crsmon.domain.grading import grade_assessment
from crsmon.domain.plausibility import LIMITS
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
from crsmon.domain.results import EpisodeResult, GradeResult
from crsmon.domain.rules import RuleSet, setting_choices
from crsmon.domain.snapshot import (
    Assessment,
    Episode,
    IcansFindings,
    MaskingDrug,
    OxygenSupport,
    TemperatureReading,
    Treatment,
    VasopressorInfusion,
)
from crsmon.domain.state import StateSettings, episode_until
from crsmon.domain.vocab import (
    CerebralEdema,
    Consciousness,
    MotorFinding,
    OxygenDevice,
    Seizure,
    TemperatureUnit,
    TreatmentDrug,
    VasoactiveDrug,
    VasopressorDoseUnit,
)
from crsmon.intake.schemas import EARLIEST_TIME
from crsmon.schemas.snapshot import MAX_T_HOURS

E = TypeVar("E", bound=Enum)
DECLARED: tuple[type[Exception], ...] = ()
"""The core raises nothing for input the edge accepts."""
MAX_OBSERVATIONS = 12
MAX_RECORDS = 20
INFUSION = datetime(2026, 1, 10, 8, tzinfo=UTC)
_NON_FINITE_TEXT = re.compile(r"\b(nan|inf|infinity)\b", re.IGNORECASE)
CTCAE_TERMS = ("acute_kidney_injury", "heart_failure", "pulmonary_edema", "other")


def _rule_set_keys() -> list[str]:
    keys = ["astct-2019"]
    for name, (_default, *others) in setting_choices().items():
        keys += [f"astct-2019+{name}={'24h' if v == '<hours>h' else v}" for v in others]
    return keys


RULE_SETS = [resolve_rule_set(key) for key in _rule_set_keys()]


class FuzzFinding(AssertionError):
    """An invariant of the grader does not hold for this input."""


def check(holds: bool, what: str) -> None:
    """Raise a :class:`FuzzFinding` unless ``holds``."""
    if not holds:
        raise FuzzFinding(what)


class Provider(Protocol):
    """The part of ``atheris.FuzzedDataProvider`` used here."""

    def ConsumeIntInRange(self, low: int, high: int, /) -> int: ...
    def ConsumeFloatInRange(self, low: float, high: float, /) -> float: ...
    def ConsumeBool(self) -> bool: ...


class Draw:
    """Typed, bounded draws from the provider."""

    def __init__(self, provider: Provider) -> None:
        self.p = provider

    def integer(self, low: int, high: int) -> int:
        return self.p.ConsumeIntInRange(low, high)

    def flag(self) -> bool:
        return self.p.ConsumeBool()

    def number(self, low: float, high: float) -> float:
        """A value in [low, high], often exactly on a bound or a round value."""
        how = self.integer(0, 7)
        if how == 0:
            return low
        if how == 1:
            return high
        if how == 2:
            return float(self.integer(math.ceil(low), math.floor(high)))
        return self.p.ConsumeFloatInRange(low, high)

    def maybe_float(self, low: float, high: float) -> float | None:
        return None if self.flag() else self.number(low, high)

    def member(self, enum: type[E]) -> E:
        members = list(enum)
        return members[self.integer(0, len(members) - 1)]

    def maybe_bool(self) -> bool | None:
        return (None, True, False)[self.integer(0, 2)]

    def within(self, name: str) -> float | None:
        """A value of ``name`` the §4.4 limits accept (or None)."""
        limit = LIMITS[name]
        low = 0.0 if limit.reject_below is None else limit.reject_below
        high = 1e6 if limit.reject_above is None else limit.reject_above
        value = self.maybe_float(low, high)
        if value is not None and limit.rejects(value):
            value = math.nextafter(value, math.inf)
        return value


# ---------------------------------------------------------------- episodes


def temperature(d: Draw) -> tuple[float | None, TemperatureReading | None]:
    how = d.integer(0, 3)
    if how == 0:
        return None, None
    if how == 1:
        return d.number(25.0, 45.0), None
    if how == 2:
        return None, TemperatureReading(d.number(25.0, 45.0), TemperatureUnit.CELSIUS)
    return None, TemperatureReading(d.number(77.0, 113.0), TemperatureUnit.FAHRENHEIT)


def blood_pressure(d: Draw) -> tuple[float | None, float | None, float | None]:
    dbp = d.within("dbp_mmhg")
    sbp = d.within("sbp_mmhg")
    if sbp is not None and dbp is not None and sbp <= dbp:
        sbp = None if dbp >= 300 else d.number(math.nextafter(dbp, math.inf), 300.0)
    return sbp, dbp, d.within("map_mmhg")


def vasopressors(d: Draw) -> tuple[VasopressorInfusion, ...]:
    return tuple(
        VasopressorInfusion(
            d.member(VasoactiveDrug),
            d.number(1e-6, 1e5),
            d.member(VasopressorDoseUnit),
            d.maybe_float(0.0, MAX_T_HOURS),
        )
        for _ in range(d.integer(0, 4))
    )


def oxygen(d: Draw) -> OxygenSupport | None:
    if d.flag():
        return None
    return OxygenSupport(
        d.member(OxygenDevice), d.within("flow_l_min"), d.within("fio2")
    )


def icans(d: Draw) -> IcansFindings | None:
    if d.flag():
        return None
    return IcansFindings(
        ice_score=None if d.flag() else d.integer(0, 10),
        capd_score=None if d.flag() else d.integer(0, 32),
        developmental_delay=d.flag(),
        consciousness=None if d.flag() else d.member(Consciousness),
        seizure=None if d.flag() else d.member(Seizure),
        motor=None if d.flag() else d.member(MotorFinding),
        cerebral_edema=None if d.flag() else d.member(CerebralEdema),
        global_aphasia=d.maybe_bool(),
        attributable_to_other_cause=d.flag(),
    )


def assessment(d: Draw, age_years: float, t_hours: float) -> Assessment:
    temperature_c, temperature_raw = temperature(d)
    sbp, dbp, map_ = blood_pressure(d)
    death = d.integer(0, 7) == 0
    terms = CTCAE_TERMS[: d.integer(0, len(CTCAE_TERMS))]
    return Assessment(
        age_years=age_years if d.flag() else d.number(0.0, 120.0),
        t_hours=t_hours,
        weight_kg=d.within("weight_kg"),
        temperature_c=temperature_c,
        temperature_raw=temperature_raw,
        fever_attributable_to_other_cause=d.flag(),
        sbp_mmhg=sbp,
        dbp_mmhg=dbp,
        map_mmhg=map_,
        iv_fluid_bolus_for_hypotension=d.flag(),
        hypotension_assessed=d.maybe_bool(),
        vasopressors=vasopressors(d),
        hypotension_attributable_to_other_cause=d.flag(),
        oxygen=oxygen(d),
        oxygen_for_comfort_only=d.flag(),
        hypoxia_attributable_to_other_cause=d.flag(),
        spo2_pct=d.within("spo2_pct"),
        organ_toxicity_ctcae=tuple((term, d.integer(0, 5)) for term in terms),
        icans=icans(d),
        death=death,
        death_attributable_to_crs=d.maybe_bool() if death else None,
    )


def hours(d: Draw) -> float:
    """A time since infusion: often on a half-hour grid, so moments coincide."""
    if d.flag():
        return d.integer(-96, 2 * 24 * 40) / 2
    return d.number(-MAX_T_HOURS, MAX_T_HOURS)


def episode(d: Draw) -> Episode:
    age = d.number(0.0, 120.0)
    observations = tuple(
        assessment(d, age, hours(d)) for _ in range(d.integer(1, MAX_OBSERVATIONS))
    )
    treatments = tuple(
        Treatment(hours(d), d.member(TreatmentDrug)) for _ in range(d.integer(0, 4))
    )
    return Episode(age_years=age, observations=observations, treatments=treatments)


def standalone(d: Draw) -> Assessment:
    base = assessment(d, d.number(0.0, 120.0), hours(d))
    masking = frozenset(m for m in MaskingDrug if d.flag())
    return Assessment(
        **{f.name: getattr(base, f.name) for f in fields(base)}
        | {"crs_established": d.flag(), "masking_drugs": masking}
    )


# ---------------------------------------------------------------- timelines


def moment(d: Draw) -> datetime:
    """A record time the intake accepts: from 2000 on, mostly near the infusion."""
    if d.integer(0, 15) == 0:
        return EARLIEST_TIME + timedelta(minutes=d.integer(0, 60 * 48))
    return INFUSION + timedelta(minutes=d.integer(-72 * 60, 40 * 24 * 60))


def timeline(d: Draw) -> PatientTimeline:
    quantities = [q for q in Quantity if q.value in LIMITS]
    measurements, oxygen_records, infusions, boluses = [], [], [], []
    treatments, attributions = [], []
    for n in range(d.integer(0, MAX_RECORDS)):
        rid, at, kind = f"r-{n}", moment(d), d.integer(0, 5)
        if kind == 0:
            quantity = quantities[d.integer(0, len(quantities) - 1)]
            value = d.within(quantity.value)
            if value is not None:
                measurements.append(Measurement(rid, at, quantity, value))
        elif kind == 1:
            device = d.member(OxygenDevice)
            flow, fio2 = d.within("flow_l_min"), d.within("fio2")
            oxygen_records.append(OxygenRecord(rid, at, device, flow, fio2, d.flag()))
        elif kind == 2:
            stop = None if d.flag() else at + timedelta(minutes=d.integer(0, 5000))
            drug, unit = d.member(VasoactiveDrug), d.member(VasopressorDoseUnit)
            infusions.append(InfusionRecord(rid, drug, 0.05, unit, at, stop))
        elif kind == 3:
            boluses.append(BolusRecord(rid, at, d.flag(), d.maybe_float(1.0, 5000.0)))
        elif kind == 4:
            treatments.append(TreatmentRecord(rid, at, d.member(TreatmentDrug)))
        else:
            end = None if d.flag() else at + timedelta(minutes=d.integer(0, 5000))
            attributions.append(AttributionRecord(rid, d.member(Finding), at, end))
    death = None
    if d.integer(0, 7) == 0:
        death = DeathRecord("death", moment(d), d.maybe_bool())
    born = INFUSION.date() - timedelta(days=d.integer(0, 43_000))
    return PatientTimeline(
        infusion_at=INFUSION,
        birth_date=born if d.flag() else None,
        age_years_at_infusion=d.number(0.0, 120.0),
        weight_kg=d.within("weight_kg"),
        measurements=tuple(measurements),
        oxygen=tuple(oxygen_records),
        infusions=tuple(infusions),
        boluses=tuple(boluses),
        treatments=tuple(treatments),
        attributions=tuple(attributions),
        death=death,
    )


# ---------------------------------------------------------------- checks


def check_finite(value: Any, where: str = "result") -> None:
    """No NaN or infinity anywhere in a result (numbers or rendered reasons)."""
    if isinstance(value, float):
        check(math.isfinite(value), f"non-finite number in {where}")
    elif isinstance(value, str):
        check(_NON_FINITE_TEXT.search(value) is None, f"non-finite text in {where}")
    elif isinstance(value, tuple | list):
        for item in value:
            check_finite(item, where)
    elif is_dataclass(value) and not isinstance(value, type):
        for f in fields(value):
            check_finite(getattr(value, f.name), f"{where}.{f.name}")


def check_grade(result: GradeResult, observed: Assessment) -> None:
    check(0 <= result.grade <= 5, "grade outside 0..5")
    check(result.grade < 5 or observed.death, "grade 5 without a death")
    check_finite(result)


def check_episode(result: EpisodeResult, given: Episode) -> None:
    check(len(result.observations) == len(given.observations), "observation lost")
    deaths = {o.t_hours for o in given.observations if o.death}
    for graded in result.observations:
        check(0 <= graded.result.grade <= 5, "grade outside 0..5")
        check(graded.result.grade < 5 or graded.t_hours in deaths, "5 without death")
    top = max((o.result.grade for o in result.observations), default=0)
    check(result.grade == top, "the episode grade is not the maximum")
    for course in result.courses:
        check(course.max_grade >= 1, "a course without CRS")
        check(course.onset_t_hours <= course.max_grade_t_hours, "peak before onset")
        if course.resolution_t_hours is not None:
            check(course.duration_hours is not None, "resolved without duration")
    check_finite(result)


def grade_all(d: Draw, rules: RuleSet) -> None:
    shape = d.integer(0, 2)
    if shape == 0:
        given = episode(d)
        check_episode(grade_episode(given, rules), given)
        for observation in given.observations:
            check_grade(grade_assessment(observation, rules), observation)
    elif shape == 1:
        single = standalone(d)
        result_one = grade_assessment(single, rules)
        check_grade(result_one, single)
        check(result_one == grade_assessment(single, rules), "not deterministic")
    else:
        patient = timeline(d)
        until = INFUSION + timedelta(days=d.integer(0, 41))
        built, snapshots = episode_until(patient, until, StateSettings())
        check(len(snapshots) == len(built.observations), "a snapshot lost")
        if built.observations:
            check_episode(grade_episode(built, rules), built)


def test_one_input(data: bytes) -> None:
    """One structured case through the grader; raises only on a finding."""
    import atheris

    d = Draw(atheris.FuzzedDataProvider(data))
    grade_all(d, RULE_SETS[d.integer(0, len(RULE_SETS) - 1)])


def main(argv: list[str]) -> None:
    """Fuzz this harness (fuzz_main.run: Atheris on crsmon's code only)."""
    from fuzz_main import run

    run(argv, __file__)


if __name__ == "__main__":
    main(sys.argv)
