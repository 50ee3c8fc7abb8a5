"""Response, relapse, HSCT and death of a synthetic patient (risk.md §3.6).

All times are days since infusion, drawn once and uncensored (the truth); a
follow-up horizon censors them (:meth:`Outcomes.at_follow_up`), so the truth
of a patient does not depend on where the data cut falls.

- **Early deaths** (§3.3) come from the course plan: 4 % of potential grade 4
  patients die on day 7–60, half of CRS (grade 5) and half of other toxicity.
- **Non-response at day 28:** P = expit(b0 − 1.2·E + 0.4·z_load), b0 = −4.0.
- **Relapse** in responders from day 28: hazard 0.085 /year ×
  exp(1.3·z_load + 1.2·sp(−(E + 0.5)) + 0.2·1[max grade ≥ 3] + 0.5·v), with
  sp(x) = ln(1 + e^(2x)) / 2 and frailty v ~ N(0, 1).
- **Consolidative HSCT:** 25 % of responders still event-free, on day U(60, 150);
  afterwards the relapse hazard is ×0.3 and transplant-related mortality
  0.04 /year is added.
- **Other deaths:** 0.02 /year in remission; after a relapse or a non-response,
  0.5 /year (a design value: risk.md does not give one).

Pure: no clock, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from crsmon.synth.cohort import Baseline, CohortDesign, patient_rng
from crsmon.synth.latent import expit

DAYS_PER_YEAR = 365.25
RESPONSE_DAY = 28.0
RELAPSE_BASE_PER_YEAR = 0.085
REMISSION_DEATH_PER_YEAR = 0.02
TRM_PER_YEAR = 0.04
HSCT_RELAPSE_FACTOR = 0.3
POST_FAILURE_DEATH_PER_YEAR = 0.5
"""Death after a relapse or a non-response (design; not in risk.md)."""
PHENOTYPES = (
    ("CD19+/CD22+", 0.56),
    ("CD19-/CD22+", 0.37),
    ("CD19-/CD22-", 0.02),
    ("unknown", 0.05),
)
"""Antigen phenotype at relapse (Wang 2023 split, risk.md §3.6)."""


def softplus2(x: float) -> float:
    """sp(x) = ln(1 + e^(2x)) / 2, without overflow."""
    y = 2 * x
    return (max(y, 0.0) + math.log1p(math.exp(-abs(y)))) / 2


def relapse_rate_per_year(
    z_load: float, expansion: float, severe: bool, frailty: float, effect: float
) -> float:
    """The relapse hazard of a responder without HSCT (per year)."""
    return RELAPSE_BASE_PER_YEAR * math.exp(
        1.3 * z_load
        + 1.2 * softplus2(-(expansion + 0.5))
        + effect * (1.0 if severe else 0.0)
        + 0.5 * frailty
    )


@dataclass(frozen=True, slots=True)
class Outcomes:
    """A patient's events after infusion, in days, uncensored (the truth)."""

    frailty_v: float
    p_nonresponse: float
    response_d28: str
    """``CR``, ``NR``, or ``not_assessed`` (died before day 28)."""
    relapse_day: float | None
    relapse_site: str | None
    relapse_phenotype: str | None
    hsct_day: float | None
    death_day: float | None
    death_cause: str | None
    """``crs``, ``toxicity``, ``refractory``, ``relapse``, ``transplant`` or
    ``remission`` (death in remission from another cause)."""

    @property
    def efs_event_day(self) -> float | None:
        """The first EFS event: no response (day 28), relapse or death."""
        times = [self.relapse_day, self.death_day]
        if self.response_d28 == "NR":
            times.append(RESPONSE_DAY)
        known = [t for t in times if t is not None]
        return min(known) if known else None

    def at_follow_up(self, follow_days: float) -> dict[str, Any]:
        """What is known at ``follow_days`` after infusion (EFS and OS censored)."""

        def seen(day: float | None) -> float | None:
            return day if day is not None and day <= follow_days else None

        efs = seen(self.efs_event_day)
        death = seen(self.death_day)
        efs_type = None
        if efs is not None:
            if self.response_d28 == "NR" and efs == RESPONSE_DAY:
                efs_type = "nr"
            elif efs == self.relapse_day:
                efs_type = "relapse"
            else:
                efs_type = "death"
        relapse = seen(self.relapse_day)
        return {
            "response_d28": (
                self.response_d28 if follow_days >= RESPONSE_DAY else "not_yet"
            ),
            "relapse_day": relapse,
            "relapse_site": self.relapse_site if relapse is not None else None,
            "relapse_phenotype": (
                self.relapse_phenotype if relapse is not None else None
            ),
            "hsct_day": seen(self.hsct_day),
            "death_day": death,
            "death_cause": self.death_cause if death is not None else None,
            "efs_event": efs is not None,
            "efs_time_days": efs if efs is not None else follow_days,
            "efs_event_type": efs_type,
            "os_event": death is not None,
            "os_time_days": death if death is not None else follow_days,
        }


def _exp(uniform: float, rate_per_year: float) -> float:
    """An exponential waiting time in days from a uniform in (0, 1]."""
    return -math.log(uniform) / rate_per_year * DAYS_PER_YEAR


def draw_outcomes(
    b: Baseline,
    seed: int,
    design: CohortDesign,
    *,
    max_grade: int,
    early_death_day: float | None,
    early_death_crs: bool | None,
) -> Outcomes:
    """The outcomes of patient ``b`` whose CRS reached ``max_grade`` (deterministic).

    ``early_death_day`` and ``early_death_crs`` are the §3.3 grade 4 early death
    of the course plan, if any. Every uniform is drawn up front, so a change of
    scenario moves only the events it concerns.
    """
    if b.latent is None:
        raise ValueError("b: a patient drawn with latent values")
    rng = patient_rng(seed, b.index, "outcomes")
    frailty = rng.gauss(0, 1)
    u = [1.0 - rng.random() for _ in range(8)]  # in (0, 1]
    site_u, phenotype_u = rng.random(), rng.random()
    hsct_day = rng.uniform(60, 150)
    e, zl = b.latent.expansion, b.latent.z_load
    p_nr = expit(design.nonresponse_intercept - 1.2 * e + 0.4 * zl)

    def early(cause_from: float) -> tuple[float | None, str | None]:
        if early_death_day is not None and early_death_day >= cause_from:
            return early_death_day, "crs" if early_death_crs else "toxicity"
        return None, None

    def outcome(**kw: Any) -> Outcomes:
        values: dict[str, Any] = {
            "frailty_v": frailty,
            "p_nonresponse": p_nr,
            "relapse_day": None,
            "relapse_site": None,
            "relapse_phenotype": None,
            "hsct_day": None,
            "death_day": None,
            "death_cause": None,
        }
        values.update(kw)
        return Outcomes(**values)

    if early_death_day is not None and early_death_day < RESPONSE_DAY:
        death, cause = early(0.0)
        return outcome(response_d28="not_assessed", death_day=death, death_cause=cause)
    if u[0] > 1.0 - p_nr:  # P(u in (1 - p, 1]) = p
        died = RESPONSE_DAY + _exp(u[1], POST_FAILURE_DEATH_PER_YEAR)
        death, cause = early(RESPONSE_DAY)
        if death is None or died < death:
            death, cause = died, "refractory"
        return outcome(response_d28="NR", death_day=death, death_cause=cause)

    rate = relapse_rate_per_year(
        zl, e, max_grade >= 3, frailty, design.severe_crs_relapse_effect
    )
    relapse = RESPONSE_DAY + _exp(u[2], rate)
    died = RESPONSE_DAY + _exp(u[3], REMISSION_DEATH_PER_YEAR)
    cause = "remission"
    hsct = None
    wants_hsct = u[4] > 1.0 - design.hsct_share
    early_day, early_cause = early(RESPONSE_DAY)
    first = min(relapse, died, early_day if early_day is not None else math.inf)
    if wants_hsct and first > hsct_day:
        hsct = hsct_day
        relapse = hsct + _exp(u[5], HSCT_RELAPSE_FACTOR * rate)
        died = hsct + _exp(u[6], REMISSION_DEATH_PER_YEAR + TRM_PER_YEAR)
        trm_share = TRM_PER_YEAR / (REMISSION_DEATH_PER_YEAR + TRM_PER_YEAR)
        cause = "transplant" if u[7] <= trm_share else "remission"
    if early_day is not None and early_day < min(relapse, died):
        return outcome(
            response_d28="CR",
            hsct_day=hsct,
            death_day=early_day,
            death_cause=early_cause,
        )
    if died < relapse:
        return outcome(
            response_d28="CR", hsct_day=hsct, death_day=died, death_cause=cause
        )
    emd = b.disease_status == "isolated_extramedullary"
    site = "extramedullary" if site_u < (0.5 if emd else 0.15) else "marrow"
    phenotype = _pick(PHENOTYPES, phenotype_u)
    after = relapse + _exp(u[1], POST_FAILURE_DEATH_PER_YEAR)
    death_cause: str | None = "relapse"
    death = after
    if early_day is not None and early_day < after:
        death, death_cause = early_day, early_cause
    return outcome(
        response_d28="CR",
        hsct_day=hsct,
        relapse_day=relapse,
        relapse_site=site,
        relapse_phenotype=phenotype,
        death_day=death,
        death_cause=death_cause,
    )


def _pick(choices: tuple[tuple[str, float], ...], u: float) -> str:
    total = 0.0
    for name, share in choices:
        total += share
        if u < total:
            return name
    return choices[-1][0]
