"""risk.md §3.4, "how much the dynamic signal tells": the early expansion signal.

Before any fever, CRP and IL-6 drift from their baseline with the latent
severity S plus one noise draw per patient (SD 3.5 on the scale of S). The
drift is nil at infusion, largest at 24 h and gone after a week; it follows S,
but far from exactly. The landmark AUROCs it gives are in
docs/synthetic-cohort.md (they need the grader and the model, so they are
measured by ``crsmon model evaluate``, not here).
"""

from __future__ import annotations

import math
import statistics

import pytest

from crsmon.synth import CohortDesign
from crsmon.synth.cohort import draw_cohort
from crsmon.synth.course import (
    EXPANSION_LOG_RISE,
    EXPANSION_NOISE_SD,
    _bump,
    severity_of,
    simulate,
)

SEED = 77
DAY = 24 * 60


def _ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    for rank, i in enumerate(order):
        ranks[i] = float(rank)
    return ranks


def spearman(a: list[float], b: list[float]) -> float:
    return statistics.correlation(_ranks(a), _ranks(b))


@pytest.fixture(scope="module")
def early() -> list[tuple[float, dict[str, dict[int, float]], float, bool]]:
    """(S, lab values by analyte and minute, baseline CRP, IL-6 measured) of
    patients still without fever at 36 h, charted for 8 days."""
    found = []
    for b in draw_cohort(500, SEED, CohortDesign()):
        course = simulate(b, SEED, 8 * DAY, CohortDesign())
        if course.plan.onset_h is not None and course.plan.onset_h < 36:
            continue
        labs: dict[str, dict[int, float]] = {}
        for e in course.events:
            if e.kind == "lab" and e.at_min >= 0:
                labs.setdefault(e.fields["analyte"], {})[e.at_min] = e.fields["value"]
        found.append((severity_of(b), labs, b.crp_mg_l, b.il6_measured))
    return found


def test_the_bump_is_nil_at_infusion_one_at_24_h_and_gone_in_a_week() -> None:
    assert _bump(0.0) == 0.0
    assert _bump(-5.0) == 0.0
    assert _bump(24.0) == pytest.approx(1.0)
    assert _bump(12.0) < _bump(24.0) > _bump(48.0)
    assert _bump(7 * 24.0) < 0.02


def test_crp_at_24_h_follows_severity_but_not_exactly(early: list) -> None:  # type: ignore[type-arg]
    """Before onset the 24 h CRP rise ranks with S (expected ρ ≈ 0.47); the
    infusion-day value and the day-7 value do not."""
    severities = [s for s, *_ in early]
    rise_24h = [math.log(labs["crp"][DAY] / crp) for _, labs, crp, _ in early]
    at_infusion = [math.log(labs["crp"][0] / crp) for _, labs, crp, _ in early]
    assert len(early) > 250
    assert 0.3 < spearman(severities, rise_24h) < 0.65
    assert abs(spearman(severities, at_infusion)) < 0.15
    assert max(abs(r) for r in at_infusion) < 0.4  # lab noise only (SD 0.08)
    # the scale: k · (S - 0.32 + eta), eta ~ N(0, 3.5)
    expected_sd = EXPANSION_LOG_RISE["crp"] * math.hypot(1.9, EXPANSION_NOISE_SD)
    assert statistics.stdev(rise_24h) == pytest.approx(expected_sd, rel=0.25)


def test_il6_drifts_with_the_same_patient_noise(early: list) -> None:  # type: ignore[type-arg]
    """CRP and IL-6 share the patient's eta: their 24 h rises agree closely."""
    pairs = [
        (math.log(labs["crp"][DAY] / crp), math.log(labs["il6"][DAY]))
        for _, labs, crp, measured in early
        if measured and DAY in labs.get("il6", {})
    ]
    assert len(pairs) > 100
    crp_rise, il6 = zip(*pairs, strict=True)
    assert spearman(list(crp_rise), list(il6)) > 0.8
