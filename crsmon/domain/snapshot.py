"""The assessment snapshot and the episode the grader reads (grading.md §0.1, §0.2).

These are frozen values built once at the edge (after validation) and trusted here.
Every clinical number carries its unit in its name. ``None`` always means *not
recorded*; it is never a stand-in for a normal value, and the grader reports it in
``missing_inputs``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


@dataclass(frozen=True, slots=True)
class TemperatureReading:
    """A temperature as the bedside recorded it, before conversion (grading.md §4.3)."""

    value: float
    unit: TemperatureUnit


@dataclass(frozen=True, slots=True)
class OxygenSupport:
    """Highest-level oxygen support in the window; ``fio2`` is a fraction 0.21–1.0."""

    device: OxygenDevice
    flow_l_min: float | None = None
    fio2: float | None = None


@dataclass(frozen=True, slots=True)
class VasopressorInfusion:
    """One vasoactive infusion running during the window."""

    drug: VasoactiveDrug
    dose: float
    unit: VasopressorDoseUnit
    duration_h: float | None = None


@dataclass(frozen=True, slots=True)
class IcansFindings:
    """ICANS domains (grading.md §3.5); recorded beside CRS, never part of it (R10)."""

    ice_score: int | None = None
    capd_score: int | None = None
    developmental_delay: bool = False
    consciousness: Consciousness | None = None
    seizure: Seizure | None = None
    motor: MotorFinding | None = None
    cerebral_edema: CerebralEdema | None = None
    global_aphasia: bool | None = None
    attributable_to_other_cause: bool = False


@dataclass(frozen=True, slots=True)
class Assessment:
    """One snapshot of a patient over a short window (grading.md §0.1).

    ``oxygen`` is ``None`` when no oxygen status was recorded: the grader then
    applies the §0.1 default (room air) *and* reports ``oxygen`` as missing.
    ``masking_drug_before_onset`` is not part of the neutral input schema; the
    episode engine sets it when an antipyretic or anti-cytokine drug was given
    before CRS onset, which cannot waive fever (A3) but can hide it.
    """

    age_years: float
    t_hours: float | None = None
    weight_kg: float | None = None
    temperature_c: float | None = None
    temperature_raw: TemperatureReading | None = None
    fever_attributable_to_other_cause: bool = False
    crs_established: bool = False
    antipyretic_or_anticytokine_given: bool = False
    sbp_mmhg: float | None = None
    dbp_mmhg: float | None = None
    map_mmhg: float | None = None
    iv_fluid_bolus_for_hypotension: bool = False
    hypotension_assessed: bool | None = None
    vasopressors: tuple[VasopressorInfusion, ...] = ()
    hypotension_attributable_to_other_cause: bool = False
    oxygen: OxygenSupport | None = None
    oxygen_for_comfort_only: bool = False
    hypoxia_attributable_to_other_cause: bool = False
    spo2_pct: float | None = None
    organ_toxicity_ctcae: tuple[tuple[str, int], ...] = ()
    icans: IcansFindings | None = None
    death: bool = False
    death_attributable_to_crs: bool | None = None
    masking_drug_before_onset: bool = False


@dataclass(frozen=True, slots=True)
class Treatment:
    """A dose of a drug that can mask fever, at hours since infusion."""

    t_hours: float
    drug: TreatmentDrug


@dataclass(frozen=True, slots=True)
class Episode:
    """A patient's observations and fever-masking treatments after one infusion (§0.2).

    Each observation carries its own ``t_hours``. The engine derives
    ``crs_established`` and ``antipyretic_or_anticytokine_given`` itself, so the
    observations handed in leave both at their defaults.
    """

    age_years: float
    observations: tuple[Assessment, ...]
    treatments: tuple[Treatment, ...] = field(default=())
