"""Who the synthetic patients are: baseline covariates, latent values, potential grade.

Design values from the risk spec, risk.md §3.2 (baseline covariates) and §3.3
(the hidden latent structure). Every §3.2 covariate is drawn, rounded as the
feed sends it, and the latent values are computed from the rounded values, so
whatever a model reads from the feed is exactly what the truth was built from.

The potential maximum grade comes from the latent severity score S (§3.3):

- ``grade_mode="latent"`` (the default, used by ``crsmon synth``): S cut at the
  fixed cut points, so the grade shares are the design's in expectation;
- ``grade_mode="quota"`` (the demo): S cut at the cohort's own quantiles, so
  the counts per grade are exact (largest remainder) and even a 20-patient demo
  shows every grade. The grade still rises with S, so it still follows the
  baseline.

Pure: a seed in, values out. No clock, no I/O.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from typing import Literal

from crsmon.synth import latent

GRADE_SHARES = (0.12, 0.38, 0.32, 0.12, 0.06)
"""Potential maximum ASTCT grade 0–4 (risk.md §3.3 design default)."""

ORGAN_SHARES = (("hypotension", 0.45), ("hypoxia", 0.25), ("both", 0.30))
"""Which organ drives a grade >= 2 (risk.md §3.4)."""

GradeMode = Literal["latent", "quota"]


@dataclass(frozen=True, slots=True)
class CohortDesign:
    """The knobs of the generator; the defaults are the risk.md §3 design values."""

    grade_mode: GradeMode = "latent"
    """``latent``: S cut at ``cut_points``; ``quota``: exact counts per grade."""
    grade_shares: tuple[float, ...] = GRADE_SHARES
    """The quota mode's shares (the latent mode's are implied by the cut points)."""
    cut_points: tuple[float, ...] = latent.CUT_POINTS
    organ_shares: tuple[tuple[str, float], ...] = ORGAN_SHARES
    infection_fever_share: float = 0.20
    """Share of patients with a fever attributed to infection on days 7–28 (§3.4)."""
    age_range_years: tuple[float, float] = (1.0, 20.0)
    vitals_every_h: int = 4
    crp_every_h: int = 12
    labs_every_h: int = 24
    """Ferritin, IL-6, platelets, LDH and creatinine."""
    sites: int = 10
    il6_missing_site_share: float = 0.40
    """IL-6 is not measured at this share of sites (§3.4)."""
    toci_modifies_course: bool = False
    """§3.5 scenario switch: a first dose before grade 3 aborts escalation (p 0.35)."""
    grade4_death_p: float = 0.04
    """Potential grade 4 patients who die on day 7–60 (half of them of CRS)."""
    nonresponse_intercept: float = -4.0
    """§3.6: P(no response at day 28) = expit(b0 - 1.2 E + 0.4 z_load)."""
    severe_crs_relapse_effect: float = 0.2
    """§3.6: the direct effect of max grade >= 3 on the relapse log-hazard."""
    hsct_share: float = 0.25
    """§3.6: consolidative HSCT among responders still event-free on day 60–150."""

    def __post_init__(self) -> None:
        if self.grade_mode not in ("latent", "quota"):
            raise ValueError("grade_mode: latent or quota")
        if len(self.grade_shares) != 5 or abs(sum(self.grade_shares) - 1) > 1e-9:
            raise ValueError("grade_shares: five shares (grades 0–4) summing to 1")
        if len(self.cut_points) != 4 or list(self.cut_points) != sorted(
            self.cut_points
        ):
            raise ValueError("cut_points: four increasing cut points")
        for name in (
            "infection_fever_share",
            "il6_missing_site_share",
            "grade4_death_p",
            "hsct_share",
        ):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name}: must be between 0 and 1")
        if self.sites < 1:
            raise ValueError("sites: at least one")


DEMO_DESIGN = CohortDesign(grade_mode="quota", infection_fever_share=0.10)
"""The demo's design: exact grade counts, and a fever from infection in 10 %."""


@dataclass(frozen=True, slots=True)
class Latent:
    """The hidden values of one patient (risk.md §3.3; the truth file)."""

    load_pct: float
    """Marrow blasts, or the (unobserved) EMD load equivalent."""
    z_load: float
    z_viab: float
    z_endo: float
    u: float
    expansion: float
    epsilon: float
    severity: float
    p_true_base: float
    """P(S > 2.03 | observed baseline)."""


@dataclass(frozen=True, slots=True)
class Baseline:
    """A synthetic patient before infusion (risk.md §3.2), as the feed sends it."""

    index: int
    pseudonym: str
    age_years: float
    weight_kg: float
    disease_status: str
    marrow_blast_pct: float
    ldh_u_l: float
    dose_cells_per_kg: float
    viability_pct: float
    potential_grade: int
    """The maximum ASTCT grade the course is built to reach (ground truth)."""
    organ: str | None
    """``hypotension``, ``hypoxia`` or ``both`` for a grade >= 2, else None."""
    infection_fever: bool
    sex: str = "male"
    prior_lines: int = 3
    prior_hsct: bool = False
    platelets_10e9_l: float = 100.0
    crp_mg_l: float = 4.0
    """Before lymphodepletion."""
    ferritin_ug_l: float = 900.0
    creatinine_mg_dl: float = 0.5
    anc_10e9_l: float = 1.0
    hb_g_dl: float = 9.5
    easix: float = 1.0
    """LDH × creatinine / platelets."""
    m_easix: float = 0.4
    """LDH × CRP (mg/dL) / platelets."""
    transduction_eff_pct: float = 40.0
    cd4_cd8_ratio: float = 1.0
    site: int = 1
    il6_measured: bool = True
    """False at the sites that do not measure IL-6."""
    latent: Latent | None = None
    """The hidden §3.3 values (the truth file); None only if built by hand."""

    def covariates(self) -> dict[str, object]:
        """The §3.2 baseline covariates as the truth file lists them."""
        return {
            "disease_status": self.disease_status,
            "age_years": self.age_years,
            "sex": self.sex,
            "weight_kg": self.weight_kg,
            "prior_lines": self.prior_lines,
            "prior_hsct": self.prior_hsct,
            "marrow_blast_pct": self.marrow_blast_pct,
            "ldh_u_l": self.ldh_u_l,
            "platelets_10e9_l": self.platelets_10e9_l,
            "crp_mg_l": self.crp_mg_l,
            "ferritin_ng_ml": self.ferritin_ug_l,
            "creatinine_mg_dl": self.creatinine_mg_dl,
            "anc_10e9_l": self.anc_10e9_l,
            "hb_g_dl": self.hb_g_dl,
            "easix": self.easix,
            "m_easix": self.m_easix,
            "viability_pct": self.viability_pct,
            "dose_car_viable_per_kg": self.dose_cells_per_kg,
            "transduction_eff_pct": self.transduction_eff_pct,
            "cd4_cd8_ratio": self.cd4_cd8_ratio,
            "site": self.site,
            "il6_measured": self.il6_measured,
        }


def pseudonym(index: int) -> str:
    """The pseudonym of patient ``index`` (0-based): ``SYN-0001``, ``SYN-0002``..."""
    return f"SYN-{index + 1:04d}"


def patient_rng(seed: int, index: int, stream: str) -> random.Random:
    """An independent, reproducible random stream for one patient and purpose.

    Seeding with a string is stable across runs and platforms (it is hashed with
    SHA-512, not with Python's salted ``hash``), and patient ``i``'s draws do not
    depend on how many patients are generated.
    """
    return random.Random(f"crsmon.synth:{seed}:{stream}:{index}")  # noqa: S311


def quota(shares: tuple[float, ...], n: int) -> list[int]:
    """Counts per category for ``n`` items (largest remainder; ties to the lower)."""
    exact = [share * n for share in shares]
    counts = [math.floor(x) for x in exact]
    # Rounded, so that equal remainders tie (and go to the lower category).
    order = sorted(
        range(len(shares)), key=lambda i: (round(counts[i] - exact[i], 9), i)
    )
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    return counts


def il6_missing_sites(seed: int, design: CohortDesign) -> frozenset[int]:
    """The sites (1-based) that do not measure IL-6."""
    rng = random.Random(f"crsmon.synth:{seed}:sites")  # noqa: S311
    k = round(design.il6_missing_site_share * design.sites)
    return frozenset(rng.sample(range(1, design.sites + 1), k))


def _blasts(rng: random.Random, disease_status: str) -> float:
    if disease_status == "isolated_extramedullary":
        return 0.0
    u = rng.random()
    if u < 0.35:
        return float(10 ** rng.uniform(math.log10(0.01), math.log10(5)))
    if u < 0.75:
        return rng.uniform(5, 50)
    return rng.uniform(50, 98)


def _viability(rng: random.Random) -> float:
    while True:
        value = 100 - rng.gammavariate(2.5, 4)
        if value >= 70:
            return value


def _poisson(rng: random.Random, mean: float) -> int:
    limit, k, p = math.exp(-mean), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def _clip(value: float, low: float, high: float) -> float:
    return min(high, max(low, value))


def _draw_patient(
    index: int, seed: int, design: CohortDesign, no_il6: frozenset[int]
) -> Baseline:
    """One patient's §3.2 covariates and §3.3 latent values (grade not yet cut)."""
    rng = patient_rng(seed, index, "baseline")
    low, high = design.age_range_years
    age = low - 1
    while not low <= age <= high:
        age = rng.gammavariate(3, 3)
    age = round(age, 1)
    weight = round(
        _clip(math.exp(rng.gauss(math.log(9 + 2.6 * age), 0.15)), 8.0, 100.0), 1
    )
    status = "isolated_extramedullary" if rng.random() < 0.149 else "hematologic"
    blasts = round(_blasts(rng, status), 2)
    ldh = float(round(200 * math.exp(0.012 * blasts + rng.gauss(0, 0.30))))
    sex = "male" if rng.random() < 0.59 else "female"
    prior_lines = 1 + _poisson(rng, 2.0)
    prior_hsct = rng.random() < 0.30
    platelets = float(
        round(_clip(150 * math.exp(-0.018 * blasts + rng.gauss(0, 0.50)), 5, 600))
    )
    crp = round(
        _clip(4 * math.exp(rng.gauss(0, 1.0)) * math.exp(0.006 * blasts), 0.2, 300), 1
    )
    ferritin = float(
        round(900 * math.exp(rng.gauss(0, 0.8)) * (1.3 if prior_hsct else 1.0))
    )
    creatinine = round(max(0.1, (0.25 + 0.025 * age) * math.exp(rng.gauss(0, 0.15))), 2)
    anc = round(math.exp(rng.gauss(0, 0.9)), 2)
    hb = round(_clip(rng.gauss(9.5, 1.2), 4.0, 16.0), 1)
    viability = round(_viability(rng), 1)
    dose = round(10 ** rng.uniform(6, 7), -3)
    transduction = round(rng.uniform(20, 60), 1)
    cd4_cd8 = round(math.exp(rng.gauss(0, 0.5)), 2)
    site = rng.randint(1, design.sites)
    infection = rng.random() < design.infection_fever_share
    emd_w = rng.gauss(0, 1)
    u = rng.gauss(0, 1)
    eps = latent.logistic(rng)
    organ_names = [name for name, _ in design.organ_shares]
    organ_weights = [w for _, w in design.organ_shares]
    organ = rng.choices(organ_names, organ_weights)[0]

    easix = ldh * creatinine / platelets
    m_easix = ldh * (crp / 10) / platelets
    emd = status == "isolated_extramedullary"
    load = round(latent.emd_load(emd_w), 4) if emd else blasts
    zl, zv, ze = latent.z_load(load), latent.z_viab(viability), latent.z_endo(m_easix)
    e = latent.expansion(zl, zv, u)
    return Baseline(
        index=index,
        pseudonym=pseudonym(index),
        age_years=age,
        weight_kg=weight,
        disease_status=status,
        marrow_blast_pct=blasts,
        ldh_u_l=ldh,
        dose_cells_per_kg=dose,
        viability_pct=viability,
        potential_grade=0,
        organ=organ,
        infection_fever=infection,
        sex=sex,
        prior_lines=prior_lines,
        prior_hsct=prior_hsct,
        platelets_10e9_l=platelets,
        crp_mg_l=crp,
        ferritin_ug_l=ferritin,
        creatinine_mg_dl=creatinine,
        anc_10e9_l=anc,
        hb_g_dl=hb,
        easix=round(easix, 4),
        m_easix=round(m_easix, 4),
        transduction_eff_pct=transduction,
        cd4_cd8_ratio=cd4_cd8,
        site=site,
        il6_measured=site not in no_il6,
        latent=Latent(
            load_pct=load,
            z_load=zl,
            z_viab=zv,
            z_endo=ze,
            u=u,
            expansion=e,
            epsilon=eps,
            severity=latent.severity(e, ze, eps),
            p_true_base=latent.p_severity_above(None if emd else blasts, zv, ze),
        ),
    )


def _severity(b: Baseline) -> float:
    if b.latent is None:  # pragma: no cover - every drawn patient has one
        raise ValueError("a drawn patient has latent values")
    return b.latent.severity


def _quota_grades(severities: list[float], shares: tuple[float, ...]) -> list[int]:
    """Grades by rank of S: the lowest share of S is grade 0, and so on."""
    counts = quota(shares, len(severities))
    order = sorted(range(len(severities)), key=lambda i: (severities[i], i))
    grades = [0] * len(severities)
    rank = 0
    for grade, count in enumerate(counts):
        for i in order[rank : rank + count]:
            grades[i] = grade
        rank += count
    return grades


def draw_cohort(n: int, seed: int, design: CohortDesign) -> tuple[Baseline, ...]:
    """``n`` baseline patients for ``seed`` (deterministic).

    Patient ``i``'s covariates and latent values do not depend on ``n``; in the
    quota mode their potential grade does (it is a rank within the cohort).
    """
    if n < 1:
        raise ValueError("n: at least one patient")
    no_il6 = il6_missing_sites(seed, design)
    draws = [_draw_patient(i, seed, design, no_il6) for i in range(n)]
    severities = [_severity(b) for b in draws]
    if design.grade_mode == "quota":
        grades = _quota_grades(severities, design.grade_shares)
        no_crs = [i for i, g in enumerate(grades) if g == 0]
        allocation = random.Random(f"crsmon.synth:{seed}:allocation")  # noqa: S311
        slots = round(design.infection_fever_share * n)
        infected = set(allocation.sample(no_crs, min(slots, len(no_crs))))
    else:
        grades = [latent.grade_of(s, design.cut_points) for s in severities]
        infected = {b.index for b in draws if b.infection_fever}
    return tuple(
        replace(
            b,
            potential_grade=grade,
            organ=b.organ if grade >= 2 else None,
            infection_fever=b.index in infected,
        )
        for b, grade in zip(draws, grades, strict=True)
    )
