"""Unit: the risk package's parts: feed to patients, designs, fitting, metrics,
and the model files' checks (each refusal with its reason)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline

from crsmon.domain.catalog import resolve_rule_set
from crsmon.domain.features import BASELINE_FEATURES, DYNAMIC_FEATURES
from crsmon.risk.artifacts import ModelFileError, load_model, save_model
from crsmon.risk.dataset import load_patients, read_feed
from crsmon.risk.metrics import (
    bootstrap_auroc_ci,
    calibration,
    evaluate_scores,
    finite_or_none,
    median,
    resampled_aurocs,
)
from crsmon.risk.training import (
    baseline_design,
    dynamic_design,
    fit,
    fit_comparator,
    peaks_before_severe,
    prediction_times,
    sensitivity_threshold,
)
from crsmon.synth import build_feed

NOW = datetime(2026, 11, 1, tzinfo=UTC)
RULES = resolve_rule_set("astct-2019")


@pytest.fixture(scope="module")
def patients() -> list:  # type: ignore[type-arg]
    feed = build_feed(NOW, patients=60, days=7, seed=11)
    return list(load_patients(feed.ndjson().splitlines(), RULES, now=NOW))


def test_the_feed_is_read_as_the_intake_reads_it() -> None:
    """Refused lines are reported with their number; no record is guessed."""
    enrol = {"kind": "patient", "source_system": "s", "source_record_id": "e1",
             "patient": "P-1", "age_years": 7.0, "care_unit": "PICU",
             "infusion_at": (NOW - timedelta(days=2)).isoformat()}  # fmt: skip
    vitals = {"kind": "vitals", "source_system": "s", "source_record_id": "v1",
              "patient": "P-1", "observed_at": (NOW - timedelta(days=1)).isoformat(),
              "temperature_c": 39.0}  # fmt: skip
    orphan = {**vitals, "source_record_id": "v2", "patient": "P-2"}
    lines = [json.dumps(enrol), "", "{not json", json.dumps(vitals), json.dumps(orphan)]
    found, refused = read_feed(lines, now=NOW)
    assert list(found) == ["P-1"]
    assert [n for n, _ in refused] == [3, 5]
    assert "not enrolled" in refused[1][1]
    (patient,) = load_patients(lines, RULES, now=NOW)
    assert patient.grades == ((24.0, 1),)
    assert (patient.first_severe_h, patient.grade_at(23), patient.grade_at(30)) == (
        None, 0, 1,
    )  # fmt: skip
    assert patient.baseline.isolated_extramedullary is None


def test_designs_follow_the_patients(patients: list) -> None:  # type: ignore[type-arg]
    """One baseline row per patient; rolling rows stop at the first grade >= 3."""
    base = baseline_design(patients)
    assert base.names == BASELINE_FEATURES
    assert base.x.shape == (len(patients), len(BASELINE_FEATURES))
    severe = [p for p in patients if p.first_severe_h is not None]
    assert base.events == len(severe) > 0
    first = severe[0]
    times = prediction_times(first)
    assert times[0] == 4.0
    assert max(times) < first.first_severe_h
    rolling = dynamic_design(patients, 24.0)
    assert rolling.names == DYNAMIC_FEATURES
    assert len(rolling.y) == sum(len(prediction_times(p)) for p in patients)
    assert 0 < rolling.events < len(rolling.y)


def test_fitting_refuses_too_little_data(patients: list) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError, match="too few"):
        fit(baseline_design(patients[:10]))


def test_a_fitted_model_round_trips_and_every_check_refuses(
    patients: list,  # type: ignore[type-arg]
    tmp_path: Path,
) -> None:
    """Saved, verified, loaded, same scores; then each check fails in turn."""
    design = dynamic_design(patients, 48.0)
    fitted = fit(design)
    assert fitted.chosen in {"logistic", "gradient_boosting"}
    assert fitted.out_of_fold.shape == design.y.shape
    assert ((fitted.out_of_fold > 0) & (fitted.out_of_fold < 1)).all()
    assert set(fitted.held_out_auroc) == {"logistic", "gradient_boosting"}
    manifest = {"kind": "dynamic", "features": list(design.names), "horizon_h": 48}
    path = save_model(fitted.estimator, tmp_path, "m", manifest)
    model = load_model(path)
    rows = [patients[0].dynamic_row(t) for t in (4.0, 8.0)]
    expected = fitted.estimator.predict_proba(model.matrix(rows))[:, 1]
    assert model.probabilities(rows) == pytest.approx(list(expected))
    assert model.probabilities([]) == []
    assert model.key.startswith("m@")
    with pytest.raises(ValueError, match="feature of the model is missing"):
        model.probabilities([patients[0].baseline_row()])
    # Same data, same seed: the same choice, held-out figures and predictions.
    # (Not the same file bytes: skops names arrays by memory address.)
    again = fit(design)
    assert (again.chosen, again.held_out_auroc) == (
        fitted.chosen,
        fitted.held_out_auroc,
    )
    twin = load_model(save_model(again.estimator, tmp_path / "again", "m", manifest))
    every = [p.dynamic_row(t) for p in patients[:20] for t in (4.0, 24.0, 48.0)]
    assert twin.probabilities(every) == model.probabilities(every)

    def refused(change: dict[str, object], match: str) -> None:
        content = json.loads(path.read_text())
        broken = tmp_path / "broken.json"
        broken.write_text(json.dumps({**content, **change}))
        with pytest.raises(ModelFileError, match=match):
            load_model(broken)

    refused({"sha256": "0" * 64}, "does not match")
    refused({"versions": {"scikit-learn": "0.1.0"}}, "retrain")
    refused({"features": list(reversed(design.names))}, "features")
    refused({"kind": "unknown"}, "features")
    refused({"file": "absent.skops"}, "missing")
    (tmp_path / "garbled.json").write_text("{")
    with pytest.raises(ModelFileError, match="unreadable"):
        load_model(tmp_path / "garbled.json")


class Doubler(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """A class no model file of crsmon may contain."""

    def fit(self, x: object, y: object = None) -> Doubler:
        del x, y
        return self

    def transform(self, x: Any) -> Any:
        return x * 2


def test_a_model_file_with_foreign_code_is_never_loaded(tmp_path: Path) -> None:
    """skops reports a type outside the allow-list; loading stops there."""
    x = np.asarray([[0.0], [1.0], [2.0], [3.0]])
    pipeline = make_pipeline(Doubler()).fit(x)
    path = save_model(
        pipeline, tmp_path, "foreign", {"kind": "baseline", "features": ["age_years"]}
    )
    with pytest.raises(ModelFileError, match="not trusted"):
        load_model(path)


def test_comparators_and_thresholds(patients: list) -> None:  # type: ignore[type-arg]
    design = baseline_design(patients)
    comparator = fit_comparator(design, ("age_years",))
    assert comparator.predict_proba(design.x[:, [8]]).shape == (len(patients), 2)
    peaks = np.asarray([0.9, 0.1, 0.5, 0.7, 0.3])
    # 80 % of 5 is 4 patients: the 4th highest peak still alerts all four.
    assert sensitivity_threshold(peaks, 0.8) == 0.3
    assert sensitivity_threshold(peaks, 0.6) == 0.5
    assert sensitivity_threshold(peaks, 1.0) == 0.1
    assert sensitivity_threshold(peaks, 0.2) == 0.9
    with pytest.raises(ValueError, match="no patient reached grade 3"):
        sensitivity_threshold(np.asarray([]))
    with pytest.raises(ValueError, match="sensitivity"):
        sensitivity_threshold(peaks, 0.0)


def test_peaks_are_per_severe_patient_over_their_rows(patients: list) -> None:  # type: ignore[type-arg]
    """One peak per patient who reached grade 3 (and had a row before it), the
    highest prediction among their rows; a baseline design is refused."""
    design = dynamic_design(patients, 48.0)
    hours = design.x[:, DYNAMIC_FEATURES.index("hours_since_infusion")]
    peaks = peaks_before_severe(design, hours / 1000)
    with_rows = [p for p in patients if prediction_times(p) and p.first_severe_h]
    assert len(with_rows) > 0
    assert peaks.tolist() == pytest.approx(
        [max(prediction_times(p)) / 1000 for p in with_rows]
    )
    assert all(max(prediction_times(p)) < p.first_severe_h for p in with_rows)
    with pytest.raises(ValueError, match="rolling design"):
        peaks_before_severe(baseline_design(patients), np.zeros(len(patients)))


def test_resampled_aurocs_are_roc_auc_score_of_each_resample() -> None:
    """The ranked, vectorized AUROC equals sklearn's, resample by resample,
    ties included, and resamples with one outcome only are left out."""
    rng = np.random.default_rng(11)
    y = np.zeros(25, dtype=np.int64)
    y[[4, 17]] = 1  # two events: about 1 resample in 8 has none
    score = np.asarray(np.round(rng.uniform(size=25) + 0.3 * y, 1), dtype=np.float64)
    found = resampled_aurocs(y, score, reps=300, seed=3, chunk=64)
    draw = np.random.default_rng(3)
    expected = []
    for _ in range(300):
        index = draw.integers(0, 25, 25)
        if 0 < y[index].sum() < 25:
            expected.append(roc_auc_score(y[index], score[index]))
    assert 0 < len(expected) < 300  # some resamples held one outcome only
    assert found == pytest.approx(expected, abs=1e-12)


def test_metrics_on_known_scores() -> None:
    """Perfect separation, a calibrated score, missing targets, small helpers."""
    rng = np.random.default_rng(5)
    p = rng.uniform(0.02, 0.98, 4000)
    y = (rng.uniform(size=4000) < p).astype(np.int64)
    scores = evaluate_scores(y, p)
    assert 0.7 < scores.auroc < 0.9
    low, high = scores.auroc_ci95
    assert low < scores.auroc < high
    assert scores.calibration_slope == pytest.approx(1.0, abs=0.15)
    assert scores.calibration_intercept == pytest.approx(0.0, abs=0.1)
    assert scores.scaled_brier is not None
    assert scores.scaled_brier > 0
    slope, _ = calibration(y, np.clip(p * 0.5, 0.01, 0.99))
    assert slope > 1.2  # too cautious predictions: slope above 1
    flat = evaluate_scores(y, p, y_predicted=np.zeros(4000, dtype=np.int64))
    assert (flat.brier, flat.calibration_slope) == (None, None)
    assert bootstrap_auroc_ci(np.asarray([0, 1]), np.asarray([0.2, 0.8]), reps=50)
    with pytest.raises(ValueError, match="both outcomes"):
        evaluate_scores(np.zeros(5, dtype=np.int64), np.zeros(5))
    assert (median([]), median([1.0, 3.0])) == (None, 2.0)
    assert (finite_or_none(float("nan")), finite_or_none(2.0)) == (None, 2.0)


def test_the_api_status_names_the_model_the_workers_load(tmp_path: Path) -> None:
    """``model_status`` (the API with a broker) checks the shipped model without
    loading it, and says what ``load_scorer`` says of it; a tampered copy and
    a missing manifest are refused or not configured, as there."""
    import shutil

    from crsmon.risk.scoring import load_scorer, model_status

    shipped = Path(__file__).parents[2] / "models"
    scorer, loaded = load_scorer(shipped, None)
    assert scorer is not None
    said = model_status(shipped, None)
    assert said.startswith(loaded.removesuffix(")"))
    assert said.endswith("scored by the workers)")
    assert model_status(shipped, 0.5) == (
        f"ok ({scorer.key}, threshold 0.500; scored by the workers)"
    )
    copy = tmp_path / "models"
    shutil.copytree(shipped, copy)
    (copy / "dynamic_48h.skops").write_bytes(b"tampered")
    assert model_status(copy, None) == (
        "refused (sha256: the model file does not match its manifest)"
    )
    assert model_status(None, None) == "not configured"
    assert model_status(tmp_path, None).startswith("not configured (no ")
