"""`crsmon model train` then `crsmon model evaluate`, in process, on small feeds.

The feeds come from the project's generator (two seeds); the truth file here
is a stand-in built from the generator's own hidden grade, used only for the
ceiling line, as the real truth file is.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from click.testing import CliRunner

from crsmon.cli import main
from crsmon.synth import build_feed

NOW = datetime(2026, 11, 1, tzinfo=UTC)


def write_feed(directory: Path, seed: int) -> tuple[Path, Path]:
    feed = build_feed(NOW, patients=150, days=7, seed=seed)
    path = directory / f"feed-{seed}.ndjson"
    path.write_text(feed.ndjson(), encoding="utf-8")
    truth = directory / f"truth-{seed}.jsonl"
    truth.write_text(
        "".join(
            json.dumps({"pseudonym": p.baseline.pseudonym,
                        "p_true_base": 0.8 if p.baseline.potential_grade >= 3 else 0.1})
            + "\n"
            for p in feed.patients
        )
    )  # fmt: skip
    return path, truth


def test_train_then_evaluate_on_another_seed(tmp_path: Path) -> None:
    train_feed, _ = write_feed(tmp_path, 31)
    test_feed, truth = write_feed(tmp_path, 32)
    models = tmp_path / "models"
    trained = CliRunner().invoke(
        main, ["model", "train", "--feed", str(train_feed), "--out", str(models)]
    )
    assert trained.exit_code == 0, trained.output
    names = sorted(p.stem for p in models.glob("*.json"))
    assert names == [
        "baseline",
        "comparator_fever_36h",
        "comparator_m_easix",
        "dynamic_24h",
        "dynamic_48h",
    ]
    manifest = json.loads((models / "dynamic_48h.json").read_text())
    assert manifest["training_data_sha256"]
    assert manifest["notice"].startswith("SYNTHETIC DATA")
    assert 0 < manifest["default_threshold"] < 1
    assert "baseline: " in trained.output
    out = tmp_path / "evaluation"
    evaluated = CliRunner().invoke(
        main,
        ["model", "evaluate", "--feed", str(test_feed), "--truth", str(truth),
         "--models", str(models), "--out", str(out)],
    )  # fmt: skip
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads((out / "evaluation.json").read_text())
    assert set(report) >= {"baseline", "landmark_24h", "landmark_48h", "alerts"}
    auroc = report["landmark_48h"]["dynamic_48h"]["auroc"]
    assert 0.5 < auroc <= 1
    assert report["alerts"]["median_lead_time_h"] is not None
    for png in ("baseline", "landmark_24h", "landmark_48h"):
        assert (out / f"reliability_{png}.png").read_bytes()[:4] == b"\x89PNG"
    assert "AUROC (95% CI)" in evaluated.output
    assert "high_risk alerts (dynamic_48h@" in evaluated.output
    (models / "dynamic_48h.skops").write_bytes(b"swapped")
    refused = CliRunner().invoke(
        main,
        ["model", "evaluate", "--feed", str(test_feed), "--truth", str(truth),
         "--models", str(models), "--out", str(out)],
    )  # fmt: skip
    assert refused.exit_code == 1
    assert "model refused: sha256" in refused.output
