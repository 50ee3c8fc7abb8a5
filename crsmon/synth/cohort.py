"""Who the synthetic patients are: baseline covariates and potential CRS grade.

Design values from the risk spec, risk.md §3.2 (baseline covariates) and §3.3 (the
potential maximum grade). This first version draws each patient's potential
grade by quota, so even a 20-patient demo shows every grade; the full cohort
generator of the risk-model issue replaces the quota with the latent severity
score S (§3.3) without changing anything downstream.

Pure: a seed in, values out. No clock, no I/O.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

GRADE_SHARES = (0.12, 0.38, 0.32, 0.12, 0.06)
"""Potential maximum ASTCT grade 0–4 (risk.md §3.3 design default)."""

ORGAN_SHARES = (("hypotension", 0.45), ("hypoxia", 0.25), ("both", 0.30))
"""Which organ drives a grade >= 2 (risk.md §3.4)."""


@dataclass(frozen=True, slots=True)
class CohortDesign:
    """The knobs of the generator; the defaults are the risk.md §3 design values."""

    grade_shares: tuple[float, ...] = GRADE_SHARES
    organ_shares: tuple[tuple[str, float], ...] = ORGAN_SHARES
    infection_fever_share: float = 0.10
    """Share of patients with a fever attributed to infection (no CRS) on day 7+."""
    age_range_years: tuple[float, float] = (1.0, 20.0)
    vitals_every_h: int = 4
    crp_every_h: int = 12
    labs_every_h: int = 24
    """Ferritin and IL-6."""

    def __post_init__(self) -> None:
        if len(self.grade_shares) != 5 or abs(sum(self.grade_shares) - 1) > 1e-9:
            raise ValueError("grade_shares: five shares (grades 0–4) summing to 1")
        if not 0 <= self.infection_fever_share <= 1:
            raise ValueError("infection_fever_share: must be between 0 and 1")


@dataclass(frozen=True, slots=True)
class Baseline:
    """A synthetic patient before infusion (risk.md §3.2 subset)."""

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
    extra: dict[str, float] = field(default_factory=dict)
    """Room for the full generator's latent values (truth file, §3.1)."""


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


def _blasts(rng: random.Random, disease_status: str) -> float:
    if disease_status == "isolated_extramedullary":
        return 0.0
    u = rng.random()
    if u < 0.35:
        return 10 ** rng.uniform(math.log10(0.01), math.log10(5))
    if u < 0.75:
        return rng.uniform(5, 50)
    return rng.uniform(50, 98)


def _viability(rng: random.Random) -> float:
    while True:
        value = 100 - rng.gammavariate(2.5, 4)
        if value >= 70:
            return value


def draw_cohort(n: int, seed: int, design: CohortDesign) -> tuple[Baseline, ...]:
    """``n`` baseline patients for ``seed`` (deterministic)."""
    if n < 1:
        raise ValueError("n: at least one patient")
    allocation = random.Random(f"crsmon.synth:{seed}:allocation")  # noqa: S311
    grades = [g for g, k in enumerate(quota(design.grade_shares, n)) for _ in range(k)]
    allocation.shuffle(grades)
    organ_names = [name for name, _ in design.organ_shares]
    organ_weights = [w for _, w in design.organ_shares]
    febrile_slots = round(design.infection_fever_share * n)
    no_crs = [i for i, g in enumerate(grades) if g == 0]
    infected = set(allocation.sample(no_crs, min(febrile_slots, len(no_crs))))
    patients = []
    for index, grade in enumerate(grades):
        rng = patient_rng(seed, index, "baseline")
        low, high = design.age_range_years
        age = low - 1
        while not low <= age <= high:
            age = rng.gammavariate(3, 3)
        weight = min(
            100.0, max(8.0, math.exp(rng.gauss(math.log(9 + 2.6 * age), 0.15)))
        )
        status = "isolated_extramedullary" if rng.random() < 0.149 else "hematologic"
        blasts = _blasts(rng, status)
        ldh = 200 * math.exp(0.012 * blasts + rng.gauss(0, 0.30))
        organ = rng.choices(organ_names, organ_weights)[0] if grade >= 2 else None
        patients.append(
            Baseline(
                index=index,
                pseudonym=pseudonym(index),
                age_years=round(age, 1),
                weight_kg=round(weight, 1),
                disease_status=status,
                marrow_blast_pct=round(blasts, 2),
                ldh_u_l=round(ldh),
                dose_cells_per_kg=round(10 ** rng.uniform(6, 7), -3),
                viability_pct=round(_viability(rng), 1),
                potential_grade=grade,
                organ=organ,
                infection_fever=index in infected,
            )
        )
    return tuple(patients)
