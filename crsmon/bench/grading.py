"""The pure grader's throughput, and its reference in the same process.

A seeded set of distinct assessments spans what the grader meets: fever in °C
or °F, attributed causes, the fever waiver, untreated hypotension by age,
fluid boluses, one or more vasopressors with or without vasopressin, every
oxygen device with and without a flow, comfort oxygen, deaths. Each is graded
with its reasons (:func:`crsmon.domain.grading.grade_assessment`) and by the
reason-free reference (:func:`crsmon.bench.minimal.minimal_grade`); the grades
must agree, or the benchmark stops.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from crsmon.bench.minimal import minimal_grade
from crsmon.domain.grading import grade_assessment
from crsmon.domain.rules import RuleSet
from crsmon.domain.snapshot import (
    Assessment,
    MaskingDrug,
    OxygenSupport,
    TemperatureReading,
    VasopressorInfusion,
)
from crsmon.domain.vocab import (
    OxygenDevice,
    TemperatureUnit,
    VasoactiveDrug,
    VasopressorDoseUnit,
)


def assessments(n: int, seed: int) -> list[Assessment]:
    """``n`` distinct assessments drawn from a seeded generator."""
    rng = random.Random(seed)  # noqa: S311 - synthetic assessments
    found: dict[Assessment, None] = {}
    devices = list(OxygenDevice)
    drugs = list(VasoactiveDrug)
    while len(found) < n:
        fahrenheit = rng.random() < 0.1
        t_c = round(rng.uniform(36.0, 40.8), 1)
        oxygen = None
        if rng.random() < 0.9:
            pick = rng.random()
            device = (
                OxygenDevice.ROOM_AIR
                if pick < 0.5
                else OxygenDevice.NASAL_CANNULA
                if pick < 0.75
                else rng.choice(devices)
            )
            flow = (
                round(rng.uniform(0.5, 12.0), 1)
                if device is OxygenDevice.NASAL_CANNULA and rng.random() < 0.9
                else None
            )
            oxygen = OxygenSupport(device, flow)
        pressors = tuple(
            VasopressorInfusion(rng.choice(drugs), 0.05, VasopressorDoseUnit.UG_KG_MIN)
            for _ in range(rng.choice((0,) * 14 + (1, 1, 1, 2, 2, 3)))
        )
        masking = frozenset(m for m in MaskingDrug if rng.random() < 0.1)
        death = rng.random() < 0.01
        a = Assessment(
            age_years=round(rng.uniform(0.5, 25.0), 1),
            temperature_c=None if fahrenheit else t_c,
            temperature_raw=TemperatureReading(
                round(t_c * 9 / 5 + 32, 1), TemperatureUnit.FAHRENHEIT
            )
            if fahrenheit
            else None,
            fever_attributable_to_other_cause=rng.random() < 0.03,
            crs_established=rng.random() < 0.4,
            masking_drugs=masking,
            sbp_mmhg=float(rng.randint(55, 130)) if rng.random() < 0.95 else None,
            dbp_mmhg=float(rng.randint(30, 50)),
            iv_fluid_bolus_for_hypotension=rng.random() < 0.1,
            hypotension_assessed=rng.choice((None,) * 18 + (True, False)),
            vasopressors=pressors,
            hypotension_attributable_to_other_cause=rng.random() < 0.03,
            oxygen=oxygen,
            oxygen_for_comfort_only=rng.random() < 0.03,
            hypoxia_attributable_to_other_cause=rng.random() < 0.03,
            spo2_pct=float(rng.randint(80, 100)),
            death=death,
            death_attributable_to_crs=rng.choice((True, False, None))
            if death
            else None,
        )
        found[a] = None
    return list(found)


@dataclass(frozen=True, slots=True)
class Rate:
    """Items handled per second over at least the minimum time."""

    items: int
    seconds: float

    @property
    def per_s(self) -> float:
        return self.items / self.seconds


def _rate(run: Callable[[], Any], per_call: int, min_seconds: float) -> Rate:
    run()  # warm up
    calls = 0
    started = time.perf_counter()
    while True:
        run()
        calls += 1
        elapsed = time.perf_counter() - started
        if elapsed >= min_seconds:
            return Rate(calls * per_call, elapsed)


class GraderDisagrees(AssertionError):
    """The grader and its reference gave different grades."""


def bench_grading(
    rules: RuleSet, *, n: int = 2000, seed: int = 20261206, min_seconds: float = 3.0
) -> dict[str, Any]:
    """Assessments per second with reasons, and the reference's, same process.

    Raises:
        GraderDisagrees: an assessment on which the two grades differ.
    """
    pool = assessments(n, seed)
    for a in pool:
        graded, bare_grade = grade_assessment(a, rules).grade, minimal_grade(a, rules)
        if graded != bare_grade:
            raise GraderDisagrees(f"grader {graded}, reference {bare_grade} for {a!r}")
    grades = [0] * 6
    for a in pool:
        grades[grade_assessment(a, rules).grade] += 1

    def full_run() -> None:
        for a in pool:
            grade_assessment(a, rules)

    def bare_run() -> None:
        for a in pool:
            minimal_grade(a, rules)

    full = _rate(full_run, len(pool), min_seconds)
    bare = _rate(bare_run, len(pool), min_seconds)
    return {
        "assessments": len(pool),
        "grades": {str(g): c for g, c in enumerate(grades)},
        "assessments_per_s": full.per_s,
        "reference_per_s": bare.per_s,
        "ratio": full.per_s / bare.per_s,
        "reference": "the same rules without reasons (crsmon.bench.minimal)",
    }
