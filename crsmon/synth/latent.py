"""The hidden latent structure of a synthetic patient (risk.md §3.3).

Standardised inputs, from the *observed* (rounded, as sent in the feed)
baseline values::

    z_load = (ln(1 + load%) - 2.3) / 1.5     load: marrow blasts, or the EMD
                                             equivalent 10^N(log10 2, 0.4) %
    z_viab = (viability - 90) / 6
    z_endo = (ln m-EASIX - ln 0.4) / 1.2
    u ~ N(0, 1)                              unmeasured biology

    E = 0.65 z_load + 0.40 z_viab + 0 ln(dose) + 0.90 u     expansion
    S = E + 0.30 z_endo + eps,  eps ~ Logistic(0, 0.70)      severity

The potential maximum ASTCT grade is S cut at (-1.87, 0.32, 2.03, 3.24), and
the true baseline risk is ``P(S > 2.03 | observed baseline)``, integrated over
u (Gauss–Hermite) and eps (the logistic CDF in closed form); for an
extramedullary (EMD) patient, whose load equivalent is not observed, also over
the load (a second Gauss–Hermite rule).

Pure standard library: no clock, no I/O.
"""

from __future__ import annotations

import math
import random
from functools import cache

CUT_POINTS = (-1.87, 0.32, 2.03, 3.24)
"""S cut points between potential grades 0|1|2|3|4 (risk.md §3.3, Monte Carlo)."""
SEVERE_CUT = CUT_POINTS[2]
"""S above this is a potential grade >= 3."""

LOAD_CENTRE, LOAD_SCALE = 2.3, 1.5
VIAB_CENTRE, VIAB_SCALE = 90.0, 6.0
ENDO_CENTRE, ENDO_SCALE = math.log(0.4), 1.2
E_LOAD, E_VIAB, E_DOSE, E_U = 0.65, 0.40, 0.0, 0.90
S_ENDO = 0.30
EPS_SCALE = 0.70
EMD_LOAD_LOG10_MEDIAN, EMD_LOAD_LOG10_SD = math.log10(2.0), 0.4
"""The EMD antigen-load equivalent, 10^N(log10 2, 0.4) % (risk.md §3.2)."""

_U_NODES = 48
_LOAD_NODES = 24


def z_load(load_pct: float) -> float:
    """Standardised disease load (marrow blasts or the EMD equivalent, in %)."""
    return (math.log1p(load_pct) - LOAD_CENTRE) / LOAD_SCALE


def z_viab(viability_pct: float) -> float:
    """Standardised product viability."""
    return (viability_pct - VIAB_CENTRE) / VIAB_SCALE


def z_endo(m_easix: float) -> float:
    """Standardised endothelial activation (m-EASIX, CRP in mg/dL)."""
    return (math.log(m_easix) - ENDO_CENTRE) / ENDO_SCALE


def expansion(zl: float, zv: float, u: float) -> float:
    """E, the expansion / inflammatory drive (dose has no effect by design)."""
    return E_LOAD * zl + E_VIAB * zv + E_U * u


def severity(e: float, ze: float, eps: float) -> float:
    """S, the severity score."""
    return e + S_ENDO * ze + eps


def grade_of(s: float, cuts: tuple[float, ...] = CUT_POINTS) -> int:
    """The potential maximum grade of severity ``s`` (0–4)."""
    return sum(1 for c in cuts if s > c)


def logistic(rng: random.Random, scale: float = EPS_SCALE) -> float:
    """A Logistic(0, ``scale``) draw (inverse CDF)."""
    p = rng.random()
    while p <= 0.0:  # pragma: no cover - random() returns 0.0 with p = 2**-53
        p = rng.random()
    return scale * math.log(p / (1.0 - p))


def expit(x: float) -> float:
    """The logistic function, without overflow."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def emd_load(w: float) -> float:
    """The EMD load equivalent (%) at standard normal deviate ``w``."""
    return float(10 ** (EMD_LOAD_LOG10_MEDIAN + EMD_LOAD_LOG10_SD * w))


@cache
def hermite_rule(n: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Nodes and weights for E[f(Z)], Z ~ N(0, 1): ``sum(w * f(x))``.

    Gauss–Hermite by Newton iteration on the orthonormal Hermite recurrence
    (Numerical Recipes, ``gauher``), rescaled from weight exp(-x^2) to the
    standard normal density, so the weights sum to 1.
    """
    if n < 1:
        raise ValueError("n: at least one node")
    x = [0.0] * n
    w = [0.0] * n
    pim4 = math.pi**-0.25
    z = 0.0
    for i in range((n + 1) // 2):
        if i == 0:
            z = math.sqrt(2 * n + 1) - 1.85575 * (2 * n + 1) ** (-1 / 6)
        elif i == 1:
            z -= 1.14 * n**0.426 / z
        elif i == 2:
            z = 1.86 * z - 0.86 * x[0]
        elif i == 3:
            z = 1.91 * z - 0.91 * x[1]
        else:
            z = 2.0 * z - x[i - 2]
        pp = 1.0
        for _ in range(100):
            p1, p2 = pim4, 0.0
            for j in range(n):
                p3, p2 = p2, p1
                p1 = z * math.sqrt(2.0 / (j + 1)) * p2 - math.sqrt(j / (j + 1)) * p3
            pp = math.sqrt(2.0 * n) * p2
            z1, z = z, z - p1 / pp
            if abs(z - z1) <= 1e-14:
                break
        x[i], x[n - 1 - i] = z, -z
        w[i] = w[n - 1 - i] = 2.0 / (pp * pp)
    root2, rootpi = math.sqrt(2.0), math.sqrt(math.pi)
    return (
        tuple(root2 * xi for xi in reversed(x)),
        tuple(wi / rootpi for wi in reversed(w)),
    )


def _p_above(mean: float, cut: float) -> float:
    """P(mean + 0.9 u + eps > cut), u ~ N(0, 1), eps ~ Logistic(0, 0.70)."""
    nodes, weights = hermite_rule(_U_NODES)
    return sum(
        wt * expit((mean + E_U * x - cut) / EPS_SCALE)
        for x, wt in zip(nodes, weights, strict=True)
    )


def p_severity_above(
    load_pct: float | None, zv: float, ze: float, cut: float = SEVERE_CUT
) -> float:
    """P(S > ``cut`` | observed baseline): the true baseline risk.

    ``load_pct`` is the observed marrow blast %; ``None`` for an EMD patient,
    whose load equivalent is integrated over its design distribution.
    """
    fixed = E_VIAB * zv + S_ENDO * ze
    if load_pct is not None:
        return _p_above(fixed + E_LOAD * z_load(load_pct), cut)
    nodes, weights = hermite_rule(_LOAD_NODES)
    return sum(
        wt * _p_above(fixed + E_LOAD * z_load(emd_load(x)), cut)
        for x, wt in zip(nodes, weights, strict=True)
    )
