"""``crsmon bench --quick`` runs from start to end and reports every figure.

A smoke test: the sizes are tiny and no timing is asserted (speed targets are
read off ``crsmon bench``'s own output, docs/performance.md). It checks that
each figure and reference is there and sane, that the grader and its
reference agreed (the bench stops otherwise), and that one regrade run is one
audit event.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import _pg_available, require

HANG_S = 600
"""A bound that catches a hang (the quick run takes well under a minute)."""


def test_the_quick_benchmark_reports_every_figure(tmp_path: Path) -> None:
    require(_pg_available(), "PostgreSQL is not answering on 127.0.0.1:5432")
    require(shutil.which("redis-server") is not None, "redis-server is not installed")
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "crsmon", "bench", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=HANG_S,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["mode"] == "quick"
    assert "not a medical device" in figures["notice"]
    grading = figures["grading"]
    assert grading["assessments_per_s"] > 0
    assert grading["reference_per_s"] > 0
    assert sum(grading["grades"].values()) == grading["assessments"]
    pipeline = figures["pipeline"]
    assert pipeline["observations_graded"] == pipeline["records_accepted"] * 5
    assert pipeline["observations_per_s"] > 0
    assert pipeline["grade_rows"] > 0
    for ratio in ("ratio_to_noop_task", "ratio_to_insert"):
        assert pipeline[ratio] > 0
    latency = figures["latency"]
    assert latency["alerts_timed"] == latency["fevers_sent"] > 0
    assert 0 < latency["p50_ms"] <= latency["p95_ms"] <= latency["p99_ms"]
    regrade = figures["regrade"]
    assert regrade["audit_events"] == 1  # one event per run, not per row
    assert regrade["observations"] > 0
    refs = figures["references"]
    assert refs["noop_tasks_per_s"] > 0
    assert refs["insert_rows_per_s"] > 0
    assert figures["rss"]["api_mb"] > 0
    assert figures["rss"]["worker_mb"] > 0
    assert set(figures["targets"]) >= {
        "grading.assessments_per_s",
        "pipeline.observations_per_s",
        "pipeline.ratio_to_noop_task",
        "latency.p99_ms",
        "regrade.observations_per_s",
        "rss.api_mb",
        "rss.worker_mb",
    }
    assert all(t["measured"] is not None for t in figures["targets"].values())
    for line in ("grading (pure core)", "pipeline", "latency", "regrade", "targets"):
        assert line in done.stdout
