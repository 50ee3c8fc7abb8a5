"""The assessment snapshot and the episode the grader reads (grading.md §0.1, §0.2).

These are frozen values built once at the edge (after validation) and trusted here.
Every clinical number carries its unit in its name. ``None`` always means *not
recorded*; it is never a stand-in for a normal value, and the grader reports it in
``missing_inputs``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

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
    dose: float | None
    """None: the rate was not recorded (ASTCT counts agents, not doses)."""
    unit: VasopressorDoseUnit | None
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


class MaskingDrug(StrEnum):
    """When, relative to the CRS course, a fever-masking drug was given (R3, A3, A6).

    Only ``SINCE_ONSET`` waives fever under the strict reading; ``BEFORE_ONSET``
    (premedication, or a dose between courses) waives it only under
    ``masked_fever=lenient``. Every kind but ``SINCE_ONSET`` may still hide a
    fever, which the grader flags where hypotension or hypoxia is present.
    """

    SINCE_ONSET = "since_onset"
    """Given at or after the current course's onset, within the waiver window."""
    EXPIRED = "expired"
    """Given since onset, but the waiver window has run out."""
    BEFORE_ONSET = "before_onset"
    """Given before the current course's onset (and outside any earlier course)."""
    EARLIER_COURSE = "earlier_course"
    """Given during an earlier, resolved CRS course."""


@dataclass(frozen=True, slots=True)
class Assessment:
    """One snapshot of a patient over a short window (grading.md §0.1).

    ``oxygen`` is ``None`` when no oxygen status was recorded: the grader then
    applies the §0.1 default (room air) *and* reports ``oxygen`` as missing.
    ``masking_drugs`` says which fever-masking drugs bear on this snapshot and
    when they were given; the neutral schema's ``antipyretic_or_anticytokine_given``
    maps onto it at the edge, and the episode engine derives it from treatments.
    """

    age_years: float
    t_hours: float | None = None
    weight_kg: float | None = None
    temperature_c: float | None = None
    temperature_raw: TemperatureReading | None = None
    fever_attributable_to_other_cause: bool = False
    crs_established: bool = False
    masking_drugs: frozenset[MaskingDrug] = frozenset()
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


@dataclass(frozen=True, slots=True)
class Treatment:
    """A dose of a drug that can mask fever, at hours since infusion."""

    t_hours: float
    drug: TreatmentDrug


@dataclass(frozen=True, slots=True)
class Episode:
    """A patient's observations and fever-masking treatments after one infusion (§0.2).

    Each observation carries its own ``t_hours``. The engine derives
    ``crs_established`` and ``masking_drugs`` itself, so the observations handed
    in leave both at their defaults.
    """

    age_years: float
    observations: tuple[Assessment, ...]
    treatments: tuple[Treatment, ...] = field(default=())
