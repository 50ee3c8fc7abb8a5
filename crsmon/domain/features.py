"""Risk-model features, defined once and shared by training and inference.

risk.md §1 (predictors) and §4.5 (baseline and landmark models). Two feature
sets, both pure functions of their arguments:

- **baseline** (at infusion): disease burden (marrow blasts, isolated
  extramedullary disease, LDH), the endothelial markers of m-EASIX (platelets,
  CRP, and m-EASIX itself, risk.md §1.3), the product (viability, dose) and age;
- **dynamic** (at a prediction time ``at``): the baseline set plus hours since
  infusion, the highest temperature so far, the time of the first fever, a fever
  >= 38.9 °C within 36 h, the current grade (0–2: the dynamic model only scores
  patients below grade 3), and the level and slope of CRP, ferritin and IL-6.

No leakage, by construction (a test proves it): only measurements observed at
or before ``at`` are read; oxygen support, vasopressors and fluid boluses (they
define the outcome), treatments (tocilizumab follows a decision on the very
risk being predicted) and attributions are never read. Missing values are
``None``, never a default: the model's imputation decides, and it is fitted on
the training data alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from crsmon.domain.records import Measurement, PatientTimeline, Quantity

FEVER_C = 38.0
HIGH_FEVER_C = 38.9
"""Hay's early high fever: >= 38.9 °C within 36 h of infusion (risk.md §1)."""
HIGH_FEVER_WINDOW_H = 36.0
BASELINE_LOOKBACK = timedelta(days=14)
"""A pre-infusion lab counts for the baseline if taken at most 14 days before."""
CURRENT_LOOKBACK = timedelta(hours=48)
"""A lab is "current" at ``at`` if taken at most 48 h before it."""
SLOPE_MIN_GAP = timedelta(hours=6)
"""The earlier point of a slope is at least 6 h before the latest one."""
MAX_DYNAMIC_GRADE = 2
_HOUR = timedelta(hours=1)
_DAY = timedelta(days=1)

BASELINE_FEATURES: tuple[str, ...] = (
    "log_marrow_blast_pct",
    "isolated_extramedullary",
    "log_ldh_u_l",
    "log_platelets_10e9_l",
    "log_crp_mg_l",
    "log_m_easix",
    "viability_pct",
    "log_dose_cells_per_kg",
    "age_years",
)
"""Baseline features, in model order (logs are natural logs)."""

DYNAMIC_FEATURES: tuple[str, ...] = (
    *BASELINE_FEATURES,
    "hours_since_infusion",
    "tmax_c",
    "hours_to_first_fever",
    "fever_ge_38_9_within_36h",
    "current_grade",
    "log_crp_now",
    "crp_log_slope_per_day",
    "log_ferritin_now",
    "ferritin_log_slope_per_day",
    "log_il6_now",
    "il6_log_slope_per_day",
)
"""Dynamic (landmark and rolling) features, in model order."""


@dataclass(frozen=True, slots=True)
class PatientBaseline:
    """What enrolment tells about a patient before infusion (risk.md §3.2)."""

    age_years: float
    marrow_blast_pct: float | None = None
    isolated_extramedullary: bool | None = None
    ldh_u_l: float | None = None
    viability_pct: float | None = None
    dose_cells_per_kg: float | None = None


@dataclass(frozen=True, slots=True)
class FeatureRow:
    """Named feature values (``None``: missing) in a model's feature order."""

    names: tuple[str, ...]
    values: tuple[float | None, ...]

    def as_dict(self) -> dict[str, float | None]:
        """``{name: value}`` in order."""
        return dict(zip(self.names, self.values, strict=True))


def _log(value: float | None) -> float | None:
    return None if value is None or value <= 0 else math.log(value)


def _series(
    timeline: PatientTimeline, quantity: Quantity, until: datetime
) -> list[Measurement]:
    """The measurements of one quantity observed at or before ``until``, in time."""
    found = [
        m
        for m in timeline.measurements
        if m.quantity is quantity and m.observed_at <= until
    ]
    return sorted(found, key=lambda m: (m.observed_at, m.record_id))


def _latest(
    series: Sequence[Measurement], at: datetime, lookback: timedelta
) -> Measurement | None:
    recent = [m for m in series if at - lookback <= m.observed_at <= at]
    return recent[-1] if recent else None


def m_easix(
    ldh_u_l: float | None, crp_mg_l: float | None, platelets_10e9_l: float | None
) -> float | None:
    """m-EASIX = LDH (U/L) x CRP (mg/dL) / platelets (10^9/L) (risk.md §1.3)."""
    if ldh_u_l is None or crp_mg_l is None or not platelets_10e9_l:
        return None
    return ldh_u_l * (crp_mg_l / 10) / platelets_10e9_l


def _baseline_values(
    patient: PatientBaseline, timeline: PatientTimeline
) -> tuple[float | None, ...]:
    infusion = timeline.infusion_at

    def pre_infusion(quantity: Quantity) -> float | None:
        found = _latest(
            _series(timeline, quantity, infusion), infusion, BASELINE_LOOKBACK
        )
        return None if found is None else found.value

    ldh = (
        patient.ldh_u_l
        if patient.ldh_u_l is not None
        else pre_infusion(Quantity.LDH_U_L)
    )
    platelets = pre_infusion(Quantity.PLATELETS_10E9_L)
    crp = pre_infusion(Quantity.CRP_MG_L)
    blasts = patient.marrow_blast_pct
    emd = patient.isolated_extramedullary
    return (
        None if blasts is None else math.log1p(blasts),
        None if emd is None else float(emd),
        _log(ldh),
        _log(platelets),
        _log(crp),
        _log(m_easix(ldh, crp, platelets)),
        patient.viability_pct,
        _log(patient.dose_cells_per_kg),
        patient.age_years,
    )


def baseline_features(
    patient: PatientBaseline, timeline: PatientTimeline
) -> FeatureRow:
    """The baseline features at infusion (nothing observed after it is read)."""
    return FeatureRow(BASELINE_FEATURES, _baseline_values(patient, timeline))


def _level_and_slope(
    series: Sequence[Measurement], at: datetime
) -> tuple[float | None, float | None]:
    """ln(latest value within 48 h) and its change per day since an earlier one."""
    latest = _latest(series, at, CURRENT_LOOKBACK)
    if latest is None or latest.value <= 0:
        return None, None
    earlier = [
        m
        for m in series
        if latest.observed_at - CURRENT_LOOKBACK
        <= m.observed_at
        <= latest.observed_at - SLOPE_MIN_GAP
        and m.value > 0
    ]
    level = math.log(latest.value)
    if not earlier:
        return level, None
    first = earlier[0]
    days = (latest.observed_at - first.observed_at) / _DAY
    return level, (level - math.log(first.value)) / days


def _fever_values(
    temperatures: Iterable[Measurement], infusion: datetime, hours: float
) -> tuple[float | None, float | None, float]:
    since = [m for m in temperatures if m.observed_at >= infusion]
    tmax = max((m.value for m in since), default=None)
    first = next((m for m in since if m.value >= FEVER_C), None)
    to_first = None if first is None else (first.observed_at - infusion) / _HOUR
    window = min(hours, HIGH_FEVER_WINDOW_H)
    high = any(
        m.value >= HIGH_FEVER_C and (m.observed_at - infusion) / _HOUR <= window
        for m in since
    )
    return tmax, to_first, float(high)


def dynamic_features(
    patient: PatientBaseline,
    timeline: PatientTimeline,
    at: datetime,
    current_grade: int,
) -> FeatureRow:
    """The dynamic features at ``at`` (only what was observed by then).

    Raises:
        ValueError: ``current_grade`` is 3 or more (the dynamic model predicts
            reaching grade 3; it does not score patients already there), or
            ``at`` is before the infusion.
    """
    if not 0 <= current_grade <= MAX_DYNAMIC_GRADE:
        raise ValueError("current_grade: the dynamic model scores grades 0–2 only")
    infusion = timeline.infusion_at
    if at < infusion:
        raise ValueError("at: a dynamic prediction is made after the infusion")
    hours = (at - infusion) / _HOUR
    tmax, to_first, high = _fever_values(
        _series(timeline, Quantity.TEMPERATURE_C, at), infusion, hours
    )
    labs: list[float | None] = []
    for quantity in (Quantity.CRP_MG_L, Quantity.FERRITIN_UG_L, Quantity.IL6_PG_ML):
        labs.extend(_level_and_slope(_series(timeline, quantity, at), at))
    values = (
        *_baseline_values(patient, timeline),
        hours,
        tmax,
        to_first,
        high,
        float(current_grade),
        *labs,
    )
    return FeatureRow(DYNAMIC_FEATURES, values)
