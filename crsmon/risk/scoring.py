"""Scoring patients in the service: the dynamic model beside the ASTCT grade.

At each grading run the worker scores every graded moment of the episode that
is below grade 3 and before the first grade >= 3, with the shipped dynamic
model (P(grade >= 3 within its horizon)). The probability, the model key and
the top contributing features are stored with the grade row; the series
becomes :class:`crsmon.domain.alerts.RiskSignal`\\ s, from which the core
raises ``high_risk`` once per episode (the first high prediction). The model never
changes a grade.

With no model (none configured, or one that fails its checks) the service
runs on and says so in ``/health/ready``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from crsmon.domain.alerts import RiskSignal
from crsmon.domain.features import MAX_DYNAMIC_GRADE, PatientBaseline, dynamic_features
from crsmon.domain.records import PatientTimeline
from crsmon.domain.state import age_years_at

if TYPE_CHECKING:  # numpy, scikit-learn and skops load only when a model does
    from numpy.typing import NDArray

    from crsmon.risk.artifacts import LoadedModel

logger = logging.getLogger(__name__)

SERVICE_MODEL = "dynamic_48h"
"""The model the service scores with (its manifest: ``<dir>/dynamic_48h.json``)."""
TOP_FEATURES = 3


class EnrolmentLike(Protocol):
    """What scoring needs of an enrolment (a stored patient or an intake row)."""

    @property
    def marrow_blast_pct(self) -> float | None: ...
    @property
    def disease_status(self) -> str | None: ...
    @property
    def ldh_u_l(self) -> float | None: ...
    @property
    def viability_pct(self) -> float | None: ...
    @property
    def dose_cells_per_kg(self) -> float | None: ...


def baseline_of(patient: EnrolmentLike, timeline: PatientTimeline) -> PatientBaseline:
    """The model's view of an enrolment (shared by training and the service)."""
    status = patient.disease_status
    return PatientBaseline(
        age_years=age_years_at(timeline, timeline.infusion_at),
        marrow_blast_pct=patient.marrow_blast_pct,
        isolated_extramedullary=None
        if status is None
        else status == "isolated_extramedullary",
        ldh_u_l=patient.ldh_u_l,
        viability_pct=patient.viability_pct,
        dose_cells_per_kg=patient.dose_cells_per_kg,
    )


@dataclass(frozen=True, slots=True)
class RiskPoint:
    """One score: when, how likely, and the features that pushed it most."""

    t_hours: float
    probability: float
    top_features: tuple[dict[str, Any], ...]


@dataclass(frozen=True, slots=True)
class ScoreRequest:
    """One patient's moments to score (see :meth:`RiskScorer.score`)."""

    baseline: PatientBaseline
    timeline: PatientTimeline
    moments: Sequence[tuple[float, int]]
    from_t: float | None = None


@dataclass(frozen=True, slots=True)
class RiskScorer:
    """A verified dynamic model and the alert threshold in force."""

    model: LoadedModel
    threshold: float

    @property
    def key(self) -> str:
        """The model key stored with every score."""
        return self.model.key

    @property
    def horizon_h(self) -> float:
        """The model's horizon."""
        return float(self.model.manifest["horizon_h"])

    def score(
        self,
        baseline: PatientBaseline,
        timeline: PatientTimeline,
        moments: Sequence[tuple[float, int]],
        *,
        from_t: float | None = None,
    ) -> list[RiskPoint]:
        """Scores at each (t_hours, grade) from infusion on, until grade >= 3;
        with ``from_t``, only the moments from then on (the earlier ones are
        scored already; the cut at grade >= 3 still counts every moment)."""
        return self.score_many([ScoreRequest(baseline, timeline, moments, from_t)])[0]

    def score_many(self, requests: Sequence[ScoreRequest]) -> list[list[RiskPoint]]:
        """:meth:`score` for many patients with one call to the model (its
        per-call cost dominates for the few new moments of one patient)."""
        chosen_all: list[list[tuple[float, int]]] = []
        rows = []
        for r in requests:
            chosen: list[tuple[float, int]] = []
            for t, grade in r.moments:
                if grade > MAX_DYNAMIC_GRADE:
                    break  # the model predicts reaching grade 3, not beyond it
                if t >= 0 and (r.from_t is None or t >= r.from_t):
                    chosen.append((t, grade))
            chosen_all.append(chosen)
            infusion = r.timeline.infusion_at
            rows += [
                dynamic_features(
                    r.baseline, r.timeline, infusion + timedelta(hours=t), grade
                )
                for t, grade in chosen
            ]
        if not rows:
            return [[] for _ in requests]
        p, tops = explained(self.model, self.model.matrix(rows))
        found: list[list[RiskPoint]] = []
        at = 0
        for chosen in chosen_all:
            found.append(
                [
                    RiskPoint(t, p[at + i], tops[at + i])
                    for i, (t, _) in enumerate(chosen)
                ]
            )
            at += len(chosen)
        return found

    def signals(self, points: Sequence[RiskPoint]) -> list[RiskSignal]:
        """The points as the core's risk signals (for ``high_risk``)."""
        return [
            RiskSignal(
                t_hours=pt.t_hours,
                horizon_h=self.horizon_h,
                probability=pt.probability,
                threshold=self.threshold,
                model_version=self.key,
                reasons=tuple(describe(f) for f in pt.top_features),
            )
            for pt in points
        ]


def describe(feature: dict[str, Any]) -> str:
    """``log_crp_now = 4.61 (raises the risk)``."""
    value = feature["value"]
    shown = "missing" if value is None else f"{value:.3g}"
    way = "raises" if feature["contribution"] > 0 else "lowers"
    return f"{feature['feature']} = {shown} ({way} the risk)"


def top_contributions(
    model: LoadedModel, x: NDArray[Any]
) -> list[tuple[dict[str, Any], ...]]:
    """Per row, the features whose value moved the probability most (see
    :func:`explained`)."""
    return explained(model, x)[1]


def explained(
    model: LoadedModel, x: NDArray[Any]
) -> tuple[list[float], list[tuple[dict[str, Any], ...]]]:
    """Per row, the probability and the features whose value moved it most.

    Occlusion, for any model: a feature's contribution is p(row) minus p(row
    with that feature set to its training median, the value the model's own
    imputer would use). Positive: the value raises the risk. Model-agnostic and
    honest about what it is (not a causal attribution).
    """
    import numpy as np

    medians = model.estimator.calibrated_classifiers_[0].estimator.steps[0][1]
    typical = medians.statistics_
    n, k = x.shape
    # One call for the row and its k occluded copies (one per feature): the
    # pipeline's per-call cost dominates for the few rows of one patient.
    stacked = np.tile(x, (k + 1, 1))
    for j in range(k):
        stacked[(j + 1) * n : (j + 2) * n, j] = typical[j]
    p_all = model.estimator.predict_proba(stacked)[:, 1]
    p = p_all[:n]
    moved = np.empty_like(x)
    for j in range(k):
        moved[:, j] = p - p_all[(j + 1) * n : (j + 2) * n]
    tops = []
    for i in range(len(x)):
        order = np.argsort(-np.abs(moved[i]))[:TOP_FEATURES]
        tops.append(
            tuple(
                {
                    "feature": model.features[j],
                    "value": _raw(x[i], j),
                    "contribution": round(float(moved[i, j]), 4),
                }
                for j in order
            )
        )
    return [float(v) for v in p], tops


def _raw(row: NDArray[Any], j: int) -> float | None:
    value = float(row[j])
    return None if math.isnan(value) else round(value, 4)


def model_status(directory: Path | None, threshold: float | None) -> str:
    """The ``/health/ready`` line of a process that does not score (the API
    with a broker: the workers score): the manifest read and the file checked
    against its SHA-256, without loading scikit-learn or the model. A model
    the workers would refuse for its library version is refused here too."""
    import hashlib
    import json
    from importlib.metadata import version

    if directory is None:
        return "not configured"
    manifest_path = directory / f"{SERVICE_MODEL}.json"
    if not manifest_path.is_file():
        return f"not configured (no {manifest_path.name} in the model directory)"
    try:
        manifest = json.loads(manifest_path.read_text())
        content = (directory / manifest["file"]).read_bytes()
        expected = str(manifest["sha256"])
        trained = str(manifest["versions"]["scikit-learn"])
        chosen = float(
            threshold if threshold is not None else manifest["default_threshold"]
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"refused (manifest: unreadable ({type(exc).__name__}))"
    if hashlib.sha256(content).hexdigest() != expected:
        return "refused (sha256: the model file does not match its manifest)"
    installed = version("scikit-learn")
    if trained.split(".")[:2] != installed.split(".")[:2]:
        return (
            f"refused (versions: trained with scikit-learn {trained}, "
            f"this is {installed})"
        )
    key = f"{manifest.get('name', SERVICE_MODEL)}@{expected[:12]}"
    return f"ok ({key}, threshold {chosen:.3f}; scored by the workers)"


def load_scorer(
    directory: Path | None, threshold: float | None
) -> tuple[RiskScorer | None, str]:
    """The service's scorer and a status line for ``/health/ready``.

    Never raises: a missing or refused model leaves the service running
    without risk scores, and the status says why.
    """
    from crsmon.risk.artifacts import ModelFileError, load_model

    if directory is None:
        return None, "not configured"
    manifest = directory / f"{SERVICE_MODEL}.json"
    if not manifest.is_file():
        return None, f"not configured (no {manifest.name} in the model directory)"
    try:
        model = load_model(manifest)
    except ModelFileError as exc:
        logger.warning("risk model refused: %s", exc)
        return None, f"refused ({exc})"
    chosen = threshold if threshold is not None else model.manifest["default_threshold"]
    scorer = RiskScorer(model, float(chosen))
    return scorer, f"ok ({scorer.key}, threshold {scorer.threshold:.3f})"
