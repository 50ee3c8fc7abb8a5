"""The latent model (risk.md §3.3) and the §3.2 baseline covariates."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from crsmon.synth import CohortDesign, draw_cohort
from crsmon.synth.cohort import DEMO_DESIGN, il6_missing_sites
from crsmon.synth.latent import (
    CUT_POINTS,
    emd_load,
    expit,
    grade_of,
    hermite_rule,
    logistic,
    p_severity_above,
    z_endo,
    z_load,
    z_viab,
)
from crsmon.synth.outcomes import softplus2


def test_the_hermite_rule_integrates_polynomials_exactly() -> None:
    """E[Z^k] of a standard normal: 1, 0, 1, 0, 3, 0, 15 (exact to degree 2n-1)."""
    for n in (1, 5, 24, 48):
        nodes, weights = hermite_rule(n)
        assert len(nodes) == n
        assert nodes == tuple(sorted(nodes))
        pairs = list(zip(nodes, weights, strict=True))
        moments = [sum(w * x**k for x, w in pairs) for k in range(min(2 * n, 7))]
        for k, moment in enumerate(moments):
            expected = 0 if k % 2 else math.prod(range(1, k, 2))
            assert moment == pytest.approx(expected, abs=1e-9), (n, k)
    with pytest.raises(ValueError, match="n:"):
        hermite_rule(0)


def test_p_true_base_matches_monte_carlo() -> None:
    """P(S > 2.03 | baseline) by quadrature == the share of simulated S above."""
    rng = random.Random(5)  # noqa: S311 - a seeded simulation, not a secret
    for blasts, viability, m_easix in ((0.5, 88.0, 0.3), (40.0, 93.0, 2.0)):
        zl, zv, ze = z_load(blasts), z_viab(viability), z_endo(m_easix)
        mean = 0.65 * zl + 0.40 * zv + 0.30 * ze
        n = 200_000
        above = sum(
            mean + 0.9 * rng.gauss(0, 1) + logistic(rng) > CUT_POINTS[2]
            for _ in range(n)
        )
        assert p_severity_above(blasts, zv, ze) == pytest.approx(above / n, abs=0.004)
    # EMD: the load equivalent is integrated over too.
    zv, ze = z_viab(90.0), z_endo(0.4)
    n, above = 100_000, 0
    for _ in range(n):
        zl = z_load(emd_load(rng.gauss(0, 1)))
        s = 0.65 * zl + 0.40 * zv + 0.30 * ze + 0.9 * rng.gauss(0, 1) + logistic(rng)
        above += s > CUT_POINTS[2]
    assert p_severity_above(None, zv, ze) == pytest.approx(above / n, abs=0.005)


def test_p_true_base_is_calibrated() -> None:
    """The mean true risk equals the share of potential grade >= 3."""
    patients = draw_cohort(5000, 3, CohortDesign())
    risks = [p.latent.p_true_base for p in patients if p.latent is not None]
    severe = sum(p.potential_grade >= 3 for p in patients) / len(patients)
    assert statistics.fmean(risks) == pytest.approx(severe, abs=0.015)
    assert grade_of(-2.0) == 0
    assert grade_of(0.0) == 1
    assert grade_of(3.0) == 3
    assert grade_of(9.0) == 4


def test_helpers_do_not_overflow() -> None:
    assert expit(-1000) == 0.0
    assert expit(1000) == 1.0
    assert expit(0) == 0.5
    assert softplus2(-1000) == 0.0
    assert softplus2(1000) == pytest.approx(1000)
    assert softplus2(0) == pytest.approx(math.log(2) / 2)


def _quantiles(values: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(values, n=10)
    return q[0], statistics.median(values), q[-1]


def test_baseline_covariates_follow_the_design() -> None:
    """risk.md §3.2, at 5,000 patients (the spec's simulated quantiles)."""
    patients = draw_cohort(5000, 3, CohortDesign())
    n = len(patients)
    emd = [p for p in patients if p.disease_status == "isolated_extramedullary"]
    assert len(emd) / n == pytest.approx(0.149, abs=0.015)
    assert all(p.marrow_blast_pct == 0 for p in emd)
    hem = [p.marrow_blast_pct for p in patients if p not in emd]
    _, p50, p90 = _quantiles(hem)
    assert p50 == pytest.approx(22, abs=3)
    assert p90 == pytest.approx(79, abs=4)
    assert statistics.median(p.age_years for p in patients) == pytest.approx(8, abs=1)
    assert all(1 <= p.age_years <= 20 for p in patients)
    assert all(8 <= p.weight_kg <= 100 for p in patients)
    males = sum(p.sex == "male" for p in patients) / n
    assert males == pytest.approx(0.59, abs=0.02)
    assert statistics.median(p.prior_lines for p in patients) == 3
    assert sum(p.prior_hsct for p in patients) / n == pytest.approx(0.30, abs=0.02)
    _, ldh50, _ = _quantiles([p.ldh_u_l for p in patients])
    assert ldh50 == pytest.approx(257, rel=0.08)
    _, plt50, _ = _quantiles([p.platelets_10e9_l for p in patients])
    assert plt50 == pytest.approx(102, rel=0.1)
    _, crp50, _ = _quantiles([p.crp_mg_l for p in patients])
    assert crp50 == pytest.approx(4.7, rel=0.12)
    m10, m50, m90 = _quantiles([p.m_easix for p in patients])
    assert (m10, m50, m90) == pytest.approx((0.19, 1.2, 11), rel=0.2)
    viability = [p.viability_pct for p in patients]
    assert min(viability) >= 70
    assert statistics.median(viability) == pytest.approx(91.4, abs=0.7)
    assert sum(v < 80 for v in viability) / n == pytest.approx(0.065, abs=0.015)
    assert all(1e6 <= p.dose_cells_per_kg <= 1e7 for p in patients)
    assert all(20 <= p.transduction_eff_pct <= 60 for p in patients)
    for p in patients:
        easix = p.ldh_u_l * p.creatinine_mg_dl / p.platelets_10e9_l
        assert p.easix == pytest.approx(easix, abs=1e-4)
        m_easix = p.ldh_u_l * p.crp_mg_l / 10 / p.platelets_10e9_l
        assert p.m_easix == pytest.approx(m_easix, abs=1e-4)
        assert p.latent is not None
        load = p.latent.load_pct
        assert load == p.marrow_blast_pct or p in emd
        assert (p.organ is None) == (p.potential_grade < 2)


def test_null_covariates_carry_no_signal() -> None:
    """Dose, transduction, CD4:CD8, sex and prior HSCT do not enter S."""
    patients = draw_cohort(5000, 3, CohortDesign())

    def corr(xs: list[float], ys: list[float]) -> float:
        return statistics.correlation(xs, ys)

    s = [p.latent.severity for p in patients if p.latent is not None]
    for name in ("dose_cells_per_kg", "transduction_eff_pct", "cd4_cd8_ratio"):
        values = [float(getattr(p, name)) for p in patients]
        assert abs(corr(values, s)) < 0.05, name
    blasts = [math.log1p(p.marrow_blast_pct) for p in patients]
    assert corr(blasts, s) > 0.3


def test_the_quota_mode_gives_exact_counts_ordered_by_severity() -> None:
    patients = draw_cohort(20, 7, DEMO_DESIGN)
    grades = [p.potential_grade for p in patients]
    assert [grades.count(g) for g in range(5)] == [3, 8, 6, 2, 1]
    ranked = sorted(patients, key=lambda p: p.latent.severity if p.latent else 0)
    assert [p.potential_grade for p in ranked] == sorted(grades)
    infected = [p for p in patients if p.infection_fever]
    assert len(infected) == 2
    assert all(p.potential_grade == 0 for p in infected)


def test_sites_and_il6() -> None:
    missing = il6_missing_sites(1, CohortDesign())
    assert len(missing) == 4
    assert missing <= set(range(1, 11))
    patients = draw_cohort(2000, 1, CohortDesign())
    measured = sum(p.il6_measured for p in patients) / len(patients)
    assert measured == pytest.approx(0.60, abs=0.04)
    assert all(p.il6_measured == (p.site not in missing) for p in patients)


def test_bad_designs_are_refused() -> None:
    with pytest.raises(ValueError, match="grade_mode"):
        CohortDesign(grade_mode="guess")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cut_points"):
        CohortDesign(cut_points=(1.0, 0.0, 2.0, 3.0))
    with pytest.raises(ValueError, match="hsct_share"):
        CohortDesign(hsct_share=1.5)
    with pytest.raises(ValueError, match="sites"):
        CohortDesign(sites=0)
