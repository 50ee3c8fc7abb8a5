"""Timestamped clinical records of one patient, as the state builder reads them.

A bedside feed sends one or a few values per message; these frozen records keep
each value with the time it was observed (tz-aware UTC, validated at the edge)
and the id of the record that carried it, so every snapshot can say where each
of its values came from. Values are in the canonical units of grading.md §4.3.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum

from crsmon.domain.vocab import (
    OxygenDevice,
    TreatmentDrug,
    VasoactiveDrug,
    VasopressorDoseUnit,
)


class Quantity(StrEnum):
    """A measured quantity, named with its canonical unit (grading.md §4.1–4.3)."""

    TEMPERATURE_C = "temperature_c"
    SBP_MMHG = "sbp_mmhg"
    DBP_MMHG = "dbp_mmhg"
    MAP_MMHG = "map_mmhg"
    HEART_RATE_PER_MIN = "heart_rate_per_min"
    RESPIRATORY_RATE_PER_MIN = "respiratory_rate_per_min"
    SPO2_PCT = "spo2_pct"
    CRP_MG_L = "crp_mg_l"
    FERRITIN_UG_L = "ferritin_ug_l"
    IL6_PG_ML = "il6_pg_ml"
    LDH_U_L = "ldh_u_l"
    CREATININE_MG_DL = "creatinine_mg_dl"
    PLATELETS_10E9_L = "platelets_10e9_l"
    FIBRINOGEN_MG_DL = "fibrinogen_mg_dl"
    AST_U_L = "ast_u_l"
    ALT_U_L = "alt_u_l"
    BILIRUBIN_MG_DL = "bilirubin_mg_dl"


BLOOD_PRESSURE = (Quantity.SBP_MMHG, Quantity.DBP_MMHG, Quantity.MAP_MMHG)
LABS = (
    Quantity.CRP_MG_L,
    Quantity.FERRITIN_UG_L,
    Quantity.IL6_PG_ML,
    Quantity.LDH_U_L,
    Quantity.CREATININE_MG_DL,
    Quantity.PLATELETS_10E9_L,
    Quantity.FIBRINOGEN_MG_DL,
    Quantity.AST_U_L,
    Quantity.ALT_U_L,
    Quantity.BILIRUBIN_MG_DL,
)
"""Laboratory quantities (grading.md §4.2): features for the risk model, not ASTCT."""


class Finding(StrEnum):
    """A CRS finding a clinician can attribute to another cause (R7)."""

    FEVER = "fever"
    HYPOTENSION = "hypotension"
    HYPOXIA = "hypoxia"


@dataclass(frozen=True, slots=True)
class Measurement:
    """One measured value at the time it was observed."""

    record_id: str
    observed_at: datetime
    quantity: Quantity
    value: float


@dataclass(frozen=True, slots=True)
class OxygenRecord:
    """The oxygen support in use from ``observed_at`` on."""

    record_id: str
    observed_at: datetime
    device: OxygenDevice
    flow_l_min: float | None = None
    fio2: float | None = None
    for_comfort_only: bool = False


@dataclass(frozen=True, slots=True)
class InfusionRecord:
    """A vasoactive infusion, running from ``started_at`` until ``stopped_at``."""

    record_id: str
    drug: VasoactiveDrug
    dose: float | None
    unit: VasopressorDoseUnit | None
    started_at: datetime
    stopped_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class BolusRecord:
    """A fluid bolus; only one given for blood pressure counts as hypotension."""

    record_id: str
    given_at: datetime
    for_hypotension: bool
    volume_ml: float | None = None


@dataclass(frozen=True, slots=True)
class TreatmentRecord:
    """A dose of a fever-masking drug (antipyretic, anti-cytokine, corticosteroid)."""

    record_id: str
    given_at: datetime
    drug: TreatmentDrug


@dataclass(frozen=True, slots=True)
class AttributionRecord:
    """A clinician's judgement that a finding has another cause, while it lasts."""

    record_id: str
    finding: Finding
    start_at: datetime
    end_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class DeathRecord:
    """A death, and whether CRS caused it (``None``: not yet recorded)."""

    record_id: str
    died_at: datetime
    attributable_to_crs: bool | None


@dataclass(frozen=True, slots=True)
class OutcomeRecord:
    """A response or its absence, relapse, death, HSCT, new therapy or last
    follow-up (docs/feed-format.md, ``outcome``), at the time it happened."""

    record_id: str
    at: datetime
    event: str
    death_attributable_to_crs: bool | None = None
    mrd_negative: bool | None = None


@dataclass(frozen=True, slots=True)
class PatientTimeline:
    """Everything recorded about one patient since enrolment.

    Age is known from ``birth_date`` when given (exact in days, for infants),
    otherwise from ``age_years_at_infusion`` plus the time since infusion.
    """

    infusion_at: datetime
    birth_date: date | None = None
    age_years_at_infusion: float | None = None
    weight_kg: float | None = None
    measurements: tuple[Measurement, ...] = ()
    oxygen: tuple[OxygenRecord, ...] = ()
    infusions: tuple[InfusionRecord, ...] = ()
    boluses: tuple[BolusRecord, ...] = ()
    treatments: tuple[TreatmentRecord, ...] = ()
    attributions: tuple[AttributionRecord, ...] = field(default=())
    death: DeathRecord | None = None
    outcomes: tuple[OutcomeRecord, ...] = ()
    """Every outcome record, death included, in time order."""
