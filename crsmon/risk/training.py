"""Training the two risk models: design matrices, candidates, choice, calibration.

risk.md §4.2 and §4.5. Two models, each a scikit-learn pipeline with a fixed seed:

- **baseline** (at infusion): P(grade >= 3 during the episode) from the
  baseline features;
- **dynamic** (rolling, every 4 h while the grade is below 3): P(grade >= 3
  within the next ``horizon_h`` hours), one model per horizon (24 h, 48 h).

For each, two candidates are compared on held-out patients (a grouped split, so
no patient is on both sides): penalised logistic regression (L2, strength by
grouped cross-validation) and gradient boosting. The better held-out AUROC wins
(ties go to the simpler, logistic model; for a dynamic model the AUROC at the
24 h and 48 h landmarks, see :func:`held_out_score`); the winner is refitted on all
training patients and calibrated (Platt scaling, grouped cross-validation).
Missing values are imputed by the pipeline (medians learned on the training
data, with missing-value indicators), never by a clinical default.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold, GroupShuffleSplit, cross_val_predict
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from crsmon.domain.features import BASELINE_FEATURES, DYNAMIC_FEATURES, FeatureRow
from crsmon.risk.dataset import PatientData

SEED = 20261124
"""The fixed seed of every random step of training."""
ROLLING_STEP_H = 4.0
ROLLING_UNTIL_H = 14 * 24.0
"""Rolling predictions every 4 h for the first 14 days (risk.md §4.4)."""
HORIZONS_H = (24.0, 48.0)

Matrix = NDArray[np.float64]
Vector = NDArray[np.int64]


LANDMARKS_H = (24.0, 48.0)
"""The landmarks of the evaluation (and of the held-out choice of a dynamic
model): hours after infusion, patients still below grade 3."""


@dataclass(frozen=True, slots=True)
class Design:
    """A design matrix: features (NaN: missing), outcome, and patient groups.

    Rolling designs also carry each row's time and whether grade >= 3 came at
    any time later (``later``): the landmark measure the models are chosen on.
    """

    names: tuple[str, ...]
    x: Matrix
    y: Vector
    groups: Vector
    times: NDArray[np.float64] | None = None
    later: Vector | None = None

    @property
    def events(self) -> int:
        """Rows with the outcome."""
        return int(self.y.sum())


def _matrix(rows: Sequence[FeatureRow], names: tuple[str, ...]) -> Matrix:
    values = [[np.nan if v is None else v for v in row.values] for row in rows]
    return np.asarray(values, dtype=np.float64).reshape(len(rows), len(names))


def baseline_design(patients: Sequence[PatientData]) -> Design:
    """One row per patient: baseline features, and whether grade >= 3 came."""
    rows = [p.baseline_row() for p in patients]
    y = [int(p.first_severe_h is not None) for p in patients]
    return Design(
        BASELINE_FEATURES,
        _matrix(rows, BASELINE_FEATURES),
        np.asarray(y, dtype=np.int64),
        np.arange(len(patients), dtype=np.int64),
    )


def prediction_times(patient: PatientData) -> list[float]:
    """Every 4 h from 4 h after infusion while below grade 3 (and within 14 days)."""
    severe = patient.first_severe_h
    times = []
    t = ROLLING_STEP_H
    while t <= ROLLING_UNTIL_H and (severe is None or t < severe):
        times.append(t)
        t += ROLLING_STEP_H
    return times


def dynamic_design(patients: Sequence[PatientData], horizon_h: float) -> Design:
    """Rolling rows: features at t, and whether grade >= 3 came in (t, t + h]."""
    rows: list[FeatureRow] = []
    y: list[int] = []
    groups: list[int] = []
    times: list[float] = []
    later: list[int] = []
    for index, patient in enumerate(patients):
        severe = patient.first_severe_h
        for t in prediction_times(patient):
            rows.append(patient.dynamic_row(t))
            y.append(int(severe is not None and t < severe <= t + horizon_h))
            groups.append(index)
            times.append(t)
            later.append(int(severe is not None))  # rows stop at grade 3
    return Design(
        DYNAMIC_FEATURES,
        _matrix(rows, DYNAMIC_FEATURES),
        np.asarray(y, dtype=np.int64),
        np.asarray(groups, dtype=np.int64),
        np.asarray(times, dtype=np.float64),
        np.asarray(later, dtype=np.int64),
    )


C_GRID = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
"""Inverse L2 penalty strengths tried for the logistic model."""


def _logistic(c: float) -> Pipeline:
    return make_pipeline(
        SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
        StandardScaler(),
        LogisticRegression(C=c, max_iter=2000, random_state=SEED),
    )


def penalty_by_cv(design: Design) -> float:
    """The L2 strength with the best grouped 5-fold AUROC (ties: the stronger)."""
    folds = list(GroupKFold(n_splits=5).split(design.x, design.y, design.groups))
    best_c, best = C_GRID[0], -1.0
    for c in C_GRID:
        scores = []
        for train, test in folds:
            if len(np.unique(design.y[test])) < 2:  # too few events in this fold
                continue
            model = _logistic(c).fit(design.x[train], design.y[train])
            p = model.predict_proba(design.x[test])[:, 1]
            scores.append(roc_auc_score(design.y[test], p))
        mean = float(np.mean(scores))
        if mean > best + 1e-9:
            best_c, best = c, mean
    return best_c


def candidates(design: Design) -> dict[str, Pipeline]:
    """The two candidate pipelines (unfitted; the logistic penalty chosen by CV)."""
    logistic = _logistic(penalty_by_cv(design))
    boosting = make_pipeline(
        SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
        HistGradientBoostingClassifier(
            max_iter=200,
            learning_rate=0.05,
            max_leaf_nodes=15,
            l2_regularization=1.0,
            random_state=SEED,
        ),
    )
    return {"logistic": logistic, "gradient_boosting": boosting}


def _subset(design: Design, index: NDArray[np.intp]) -> Design:
    return Design(
        design.names,
        design.x[index],
        design.y[index],
        design.groups[index],
        None if design.times is None else design.times[index],
        None if design.later is None else design.later[index],
    )


def held_out_score(design: Design, p: NDArray[np.float64]) -> float:
    """How a candidate is judged on held-out patients: the AUROC for a
    baseline design; for a rolling design the mean landmark AUROC (at 24 h and
    48 h, patients below grade 3, "grade >= 3 later"), the evaluation's own
    measure. The pooled AUROC over all rolling rows would reward telling day 1
    from day 10 rather than the patients apart, and did pick a model that
    ranked worse at 24 h."""
    if design.times is None or design.later is None:
        return float(roc_auc_score(design.y, p))
    scores = []
    for hours in LANDMARKS_H:
        at = design.times == hours
        later = design.later[at]
        if 0 < later.sum() < len(later):
            scores.append(float(roc_auc_score(later, p[at])))
    if not scores:
        return float(roc_auc_score(design.y, p))
    return float(np.mean(scores))


@dataclass(frozen=True, slots=True)
class Fitted:
    """A calibrated model, how it was chosen, and its out-of-fold predictions."""

    estimator: Any
    chosen: str
    held_out_auroc: dict[str, float]
    rows: int
    events: int
    patients: int
    out_of_fold: NDArray[np.float64]
    """Calibrated predictions for each training row from a model fitted without
    that row's patient (grouped 5-fold): what a threshold is set on, since
    in-sample predictions of a boosted model are optimistic."""


def fit(design: Design) -> Fitted:
    """Choose the candidate with the better held-out AUROC; refit; calibrate.

    Raises:
        ValueError: too few events or patients to train on.
    """
    patients = len(np.unique(design.groups))
    if design.events < 10 or patients < 20:
        raise ValueError("too few events (need 10) or patients (need 20) to train")
    split = GroupShuffleSplit(n_splits=1, test_size=0.3, random_state=SEED)
    train_index, test_index = next(split.split(design.x, design.y, design.groups))
    train, test = _subset(design, train_index), _subset(design, test_index)
    if len(np.unique(test.y)) < 2 or len(np.unique(train.y)) < 2:
        raise ValueError("too few events to hold some out: train on more patients")
    scores = {}
    for name, pipeline in candidates(train).items():
        pipeline.fit(train.x, train.y)
        scores[name] = held_out_score(test, pipeline.predict_proba(test.x)[:, 1])
    chosen = "logistic"
    if scores["gradient_boosting"] > scores["logistic"] + 0.005:
        chosen = "gradient_boosting"
    folds = list(GroupKFold(n_splits=5).split(design.x, design.y, design.groups))
    pipeline = candidates(design)[chosen]
    calibrated = CalibratedClassifierCV(
        pipeline, method="sigmoid", cv=folds, ensemble=False
    )
    calibrated.fit(design.x, design.y)
    # The same out-of-fold scores the sigmoid was fitted on, through the sigmoid.
    raw = cross_val_predict(
        pipeline, design.x, design.y, cv=folds, method="decision_function"
    )
    sigmoid = calibrated.calibrated_classifiers_[0].calibrators[0]
    out_of_fold = np.asarray(sigmoid.predict(raw), dtype=np.float64)
    # The folds were GroupKFold(5) on the patients; keep the splitter, not the
    # row indices of every fold (megabytes in the model file, unused to predict).
    calibrated.set_params(cv=GroupKFold(n_splits=5))
    return Fitted(
        calibrated,
        chosen,
        scores,
        len(design.y),
        design.events,
        patients,
        out_of_fold,
    )


def fit_comparator(design: Design, columns: tuple[str, ...]) -> Pipeline:
    """A one-feature logistic model (m-EASIX, early high fever) for comparison."""
    index = [design.names.index(c) for c in columns]
    pipeline = make_pipeline(
        SimpleImputer(strategy="median", keep_empty_features=True),
        LogisticRegression(C=1e6, max_iter=2000, random_state=SEED),
    )
    return pipeline.fit(design.x[:, index], design.y)


ALERT_SENSITIVITY = 0.8
"""The default ``high_risk`` threshold alerts this share of the training
patients who reached grade 3 before they did, judged on out-of-fold
predictions (risk.md §4.4: event-level sensitivity at a stated alert burden,
not an accuracy-optimal cut)."""


def peaks_before_severe(design: Design, p: NDArray[np.float64]) -> NDArray[np.float64]:
    """Per patient of a rolling design who reached grade 3, the highest
    prediction ``p`` among their rows (all of which come before it): an alert
    came before grade 3 at any threshold up to this value."""
    if design.later is None:
        raise ValueError("design: a rolling design is needed")
    severe = design.later == 1
    peaks = [float(p[severe & (design.groups == g)].max())
             for g in np.unique(design.groups[severe])]  # fmt: skip
    return np.asarray(peaks, dtype=np.float64)


def sensitivity_threshold(
    peaks: NDArray[np.float64], sensitivity: float = ALERT_SENSITIVITY
) -> float:
    """The highest threshold that ``sensitivity`` of the ``peaks`` reach.

    Raises:
        ValueError: no peaks (no patient reached grade 3), or a share outside (0, 1].
    """
    if not 0 < sensitivity <= 1:
        raise ValueError("sensitivity: a share in (0, 1]")
    if len(peaks) == 0:
        raise ValueError("peaks: no patient reached grade 3 to set a threshold on")
    ordered = np.sort(peaks)[::-1]
    needed = math.ceil(sensitivity * len(ordered) - 1e-9)
    return float(ordered[needed - 1])
