"""The risk model in the service, on SQLite and PostgreSQL: scores stored with
grades, ``high_risk`` raised once per episode, grades never changed, and a missing
or refused model reported, never fatal."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import guards_off
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from crsmon.db.models import Alert, Grade, Patient
from crsmon.domain.catalog import resolve_rule_set
from crsmon.risk.artifacts import save_model
from crsmon.risk.dataset import load_patients
from crsmon.risk.scoring import RiskScorer, describe, load_scorer
from crsmon.risk.training import dynamic_design, fit
from crsmon.services.dispatch import InProcessDispatcher
from crsmon.services.ingest import ingest_text
from crsmon.services.monitoring import AlertPolicy
from crsmon.settings import Settings
from crsmon.synth import build_feed

RULES = resolve_rule_set("astct-2019")
NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small dynamic 48 h model trained on a synthetic feed (not the shipped one)."""
    now = datetime(2026, 11, 1, tzinfo=UTC)
    feed = build_feed(now, patients=80, days=7, seed=21).ndjson().splitlines()
    patients = list(load_patients(feed, RULES, now=now))
    design = dynamic_design(patients, 48.0)
    fitted = fit(design)
    directory = tmp_path_factory.mktemp("models")
    save_model(
        fitted.estimator,
        directory,
        "dynamic_48h",
        {"kind": "dynamic", "horizon_h": 48.0, "features": list(design.names),
         "default_threshold": 0.2},
    )  # fmt: skip
    return directory


def feed(sessions: sessionmaker[Session], *records: dict[str, Any]) -> None:
    for n, fields in enumerate(records):
        text = json.dumps({"source_system": "t", "source_record_id": f"k{n}", **fields})
        outcome = ingest_text(sessions, text, now=NOW, channel="test")
        assert outcome.status == "stored", outcome.error


def course(sessions: sessionmaker[Session]) -> int:
    """Fever from 8 h, rising CRP, then one vasopressor at 30 h: grade 3."""
    infusion = NOW - timedelta(hours=40)

    def at(hours: float) -> str:
        return (infusion + timedelta(hours=hours)).isoformat()

    base = {"patient": "P-R1"}
    feed(
        sessions,
        {"kind": "patient", "patient": "P-R1", "age_years": 8.0, "care_unit": "PICU",
         "infusion_at": at(0), "marrow_blast_pct": 60.0, "ldh_u_l": 600.0,
         "disease_status": "hematologic",
         "product": {"name": "x", "dose_cells_per_kg": 3e6, "viability_pct": 80}},
        *({**base, "kind": "vitals", "observed_at": at(h), "temperature_c": temp,
           "sbp_mmhg": sbp, "dbp_mmhg": 50}
          for h, temp, sbp in ((4, 37.2, 100), (8, 38.6, 98), (16, 39.4, 95),
                               (24, 39.8, 92), (30, 39.9, 70))),
        *({**base, "kind": "lab", "observed_at": at(h), "analyte": "crp",
           "value": v, "unit": "mg/L"} for h, v in ((6, 20), (18, 90), (28, 180))),
        {**base, "kind": "vasopressor_start", "started_at": at(30),
         "drug": "norepinephrine", "dose": 0.1, "unit": "ug/kg/min"},
    )  # fmt: skip
    with sessions() as session:
        found = session.scalar(select(Patient.id))
    assert isinstance(found, int)
    return found


def test_scores_are_stored_with_grades_and_never_change_them(
    sessions: sessionmaker[Session], model_dir: Path
) -> None:
    """Below grade 3 each grade row has a score, the key and its top features;
    from grade 3 on none; the grades equal those of a run without a model."""
    scorer, status = load_scorer(model_dir, threshold=0.0)
    assert scorer is not None
    assert status.startswith("ok (dynamic_48h@")
    patient = course(sessions)
    InProcessDispatcher(sessions, RULES, AlertPolicy(risk=scorer)).notify([patient])
    with sessions() as session:
        grades = session.scalars(select(Grade).order_by(Grade.t_hours)).all()
        high = session.scalars(select(Alert).where(Alert.kind == "high_risk")).all()
    assert [g.grade for g in grades][-1] == 3
    for g in grades:
        if g.grade < 3:
            assert g.risk_probability is not None
            assert 0 <= g.risk_probability <= 1
            assert g.risk_model == scorer.key
            assert g.risk_features
            assert {"feature", "value", "contribution"} <= set(g.risk_features[0])
        else:
            assert (g.risk_probability, g.risk_model, g.risk_features) == (None,) * 3
    # Threshold 0: every prediction is high, so one run and one alert.
    (alert,) = high
    assert alert.severity == "critical"
    assert alert.reasons[0].startswith(f"risk model {scorer.key}: probability")
    assert alert.dedup_key == f"high_risk:model={scorer.key}:horizon=48.0"
    grades_with = [(g.t_hours, g.grade, g.reasons) for g in grades]
    with guards_off(sessions.kw["bind"], "grades"), sessions.begin() as session:
        for g in session.scalars(select(Grade)):
            session.delete(g)
    InProcessDispatcher(sessions, RULES, AlertPolicy()).notify([patient])
    with sessions() as session:
        plain = session.scalars(select(Grade).order_by(Grade.t_hours)).all()
    assert [(g.t_hours, g.grade, g.reasons) for g in plain] == grades_with
    assert all(g.risk_probability is None for g in plain)


def test_without_a_usable_model_the_service_says_why(
    model_dir: Path, tmp_path: Path
) -> None:
    """No directory, no manifest, a damaged model: no scorer, a status line."""
    assert load_scorer(None, None) == (None, "not configured")
    assert load_scorer(tmp_path, None)[1].startswith("not configured (no dynamic_48h")
    for name in ("dynamic_48h.json", "dynamic_48h.skops"):
        (tmp_path / name).write_bytes((model_dir / name).read_bytes())
    (tmp_path / "dynamic_48h.skops").write_bytes(b"damaged")
    scorer, status = load_scorer(tmp_path, None)
    assert scorer is None
    assert status.startswith("refused (sha256")
    settings = Settings(risk_model_dir="")
    assert settings.risk_model_dir is None


def test_the_default_threshold_comes_from_the_manifest(model_dir: Path) -> None:
    scorer, _ = load_scorer(model_dir, None)
    assert isinstance(scorer, RiskScorer)
    assert (scorer.threshold, scorer.horizon_h) == (0.2, 48.0)
    assert scorer.score(_baseline(), _timeline(), [(-2.0, 0), (5.0, 3)]) == []
    assert describe({"feature": "tmax_c", "value": None, "contribution": -0.2}) == (
        "tmax_c = missing (lowers the risk)"
    )


def _baseline() -> Any:
    from crsmon.domain.features import PatientBaseline

    return PatientBaseline(age_years=5.0)


def _timeline() -> Any:
    from crsmon.domain.records import PatientTimeline

    return PatientTimeline(infusion_at=NOW)


def test_contributions_are_the_occlusion_differences(model_dir: Path) -> None:
    """Each reported contribution is p(row) - p(row with that feature at its
    training median), computed one feature at a time here; the top three by size."""
    import numpy as np

    from crsmon.risk.artifacts import load_model
    from crsmon.risk.scoring import TOP_FEATURES, top_contributions

    model = load_model(model_dir / "dynamic_48h.json")
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, len(model.features)))
    x[1, 2] = np.nan
    medians = model.estimator.calibrated_classifiers_[0].estimator.steps[0][1]
    p = model.estimator.predict_proba(x)[:, 1]
    tops = top_contributions(model, x)
    for i in range(len(x)):
        expected = []
        for j in range(x.shape[1]):
            occluded = x[i : i + 1].copy()
            occluded[0, j] = medians.statistics_[j]
            expected.append(p[i] - model.estimator.predict_proba(occluded)[0, 1])
        order = sorted(range(len(expected)), key=lambda j: -abs(expected[j]))
        assert len(tops[i]) == TOP_FEATURES
        for found, j in zip(tops[i], order[:TOP_FEATURES], strict=True):
            assert found["feature"] == model.features[j]
            assert found["contribution"] == pytest.approx(expected[j], abs=1e-4)
    for found in tops[1]:  # a missing value is reported as missing, not as a number
        if found["feature"] == model.features[2]:
            assert found["value"] is None
