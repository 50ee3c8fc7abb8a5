"""Discrimination and calibration of a risk score (risk.md §4.2).

Plain functions over arrays of outcomes (0/1) and predicted probabilities:
AUROC with a bootstrap 95 % CI (resampling patients, seeded), Brier and scaled
Brier (1 - Brier / Brier of the prevalence), and the calibration slope and
intercept from logistic recalibration on logit(p) (Van Calster 2019): slope
from ``y ~ a + b·logit(p)``, intercept ("calibration in the large") from
``y ~ a + offset(logit(p))``. A reliability plot is written with matplotlib.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import brentq
from scipy.stats import rankdata
from sklearn.calibration import calibration_curve
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, roc_auc_score

Floats = NDArray[np.float64]
EPS = 1e-6


@dataclass(frozen=True, slots=True)
class Scores:
    """How well one score separates and predicts one outcome."""

    n: int
    events: int
    auroc: float
    auroc_ci95: tuple[float, float]
    brier: float | None
    scaled_brier: float | None
    calibration_slope: float | None
    calibration_intercept: float | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


def _logit(p: Floats) -> Floats:
    q = np.clip(p, EPS, 1 - EPS)
    return np.asarray(np.log(q / (1 - q)), dtype=np.float64)


def resampled_aurocs(
    y: NDArray[np.int64], score: Floats, *, reps: int, seed: int, chunk: int = 100
) -> Floats:
    """The AUROC of each of ``reps`` patient resamples that holds both outcomes.

    All resamples of a chunk are ranked at once (scipy ``rankdata``, ties
    averaged), and each AUROC is the Mann-Whitney statistic
    ``(R1 - n1(n1+1)/2) / (n1 n0)``, which is what ``roc_auc_score`` computes,
    ties counted one half; a test checks the two agree resample by resample.
    """
    rng = np.random.default_rng(seed)
    n = len(y)
    found = []
    for start in range(0, reps, chunk):
        index = rng.integers(0, n, (min(chunk, reps - start), n))
        sample = y[index]
        events = sample.sum(axis=1)
        both = (events > 0) & (events < n)
        sample, events = sample[both], events[both]
        ranks = rankdata(score[index[both]], axis=1)
        r1 = (ranks * sample).sum(axis=1)
        found.append((r1 - events * (events + 1) / 2) / (events * (n - events)))
    return np.asarray(np.concatenate(found), dtype=np.float64)


def bootstrap_auroc_ci(
    y: NDArray[np.int64], score: Floats, *, reps: int = 1000, seed: int = 20261124
) -> tuple[float, float]:
    """Percentile 95 % CI of the AUROC over ``reps`` resamples (seeded)."""
    found = resampled_aurocs(y, score, reps=reps, seed=seed)
    low, high = np.percentile(found, [2.5, 97.5])
    return float(low), float(high)


def calibration(y: NDArray[np.int64], p: Floats) -> tuple[float, float]:
    """(slope, intercept) of logistic recalibration on logit(p)."""
    z = _logit(p)
    slope_fit = LogisticRegression(C=1e9, max_iter=1000).fit(z.reshape(-1, 1), y)
    slope = float(slope_fit.coef_[0][0])

    def score(a: float) -> float:
        return float(np.sum(y - 1 / (1 + np.exp(-(a + z)))))

    intercept = float(brentq(score, -20, 20))
    return slope, intercept


def evaluate_scores(
    y: NDArray[np.int64],
    score: Floats,
    *,
    y_predicted: NDArray[np.int64] | None = None,
) -> Scores:
    """AUROC (with CI) against ``y``; Brier and calibration against the outcome
    the score predicts (``y_predicted``, by default ``y``): a 48 h model at a
    landmark separates "later grade >= 3" and is calibrated on "within 48 h".

    Raises:
        ValueError: both classes must be present.
    """
    events = int(y.sum())
    if not 0 < events < len(y):
        raise ValueError("y: both outcomes must occur to evaluate a score")
    auroc = float(roc_auc_score(y, score))
    ci = bootstrap_auroc_ci(y, score)
    target = y if y_predicted is None else y_predicted
    if not 0 < int(target.sum()) < len(target):  # nothing to calibrate against
        return Scores(len(y), events, auroc, ci, None, None, None, None)
    brier = float(brier_score_loss(target, score))
    prevalence = float(target.mean())
    reference = prevalence * (1 - prevalence)
    slope, intercept = calibration(target, score)
    return Scores(
        len(y), events, auroc, ci, brier, 1 - brier / reference, slope, intercept
    )


def reliability_plot(
    curves: dict[str, tuple[NDArray[np.int64], Floats]], path: Path, title: str
) -> Path:
    """Observed vs predicted risk in deciles of prediction, one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(5.5, 5.5))
    axes.plot([0, 1], [0, 1], linestyle=":", color="grey", label="ideal")
    for name, (y, p) in curves.items():
        observed, predicted = calibration_curve(y, p, n_bins=10, strategy="quantile")
        axes.plot(predicted, observed, marker="o", label=name)
    axes.set_xlabel("predicted probability")
    axes.set_ylabel("observed proportion")
    axes.set_title(title, fontsize=9)
    axes.legend(loc="upper left", fontsize=8)
    figure.text(
        0.01, 0.01, "crsmon: synthetic data; research software, not a medical device",
        fontsize=6,
    )  # fmt: skip
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def median(values: list[float]) -> float | None:
    """The median, or None for no values."""
    return None if not values else float(np.median(values))


def finite_or_none(value: float | None) -> float | None:
    """JSON has no NaN: None instead."""
    return None if value is None or not math.isfinite(value) else value
