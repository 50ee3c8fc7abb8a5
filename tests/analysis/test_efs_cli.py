"""`crsmon analyze efs` on CSV files, checked against lifelines run here.

The synthetic table is written to CSV, the command runs on it in process, and
every figure of efs.json is recomputed in this file straight from the CSV with
lifelines, without crsmon's code: the landmark subset, the grade reached by day
28, Kaplan–Meier with delayed entry at day 28 (crsmon shifts the times
instead: the same estimate), log-rank and Cox on times since infusion (both
depend on the order of the times only, so the shift to the landmark is the
same fit).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from efs_synthetic import FIRST_DAY, make_long, make_patients
from lifelines import CoxPHFitter, CoxTimeVaryingFitter, KaplanMeierFitter
from lifelines.statistics import logrank_test

from crsmon.cli import main
from crsmon.services import exports

REL = 1e-9
LANDMARK = 28.0


@dataclass(frozen=True)
class Run:
    table: Path
    long: Path
    out: Path
    output: str
    result: dict[str, Any]


def _analyze(args: list[str]) -> Any:
    return CliRunner().invoke(main, ["analyze", "efs", *args])


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    directory = tmp_path_factory.mktemp("efs")
    patients = make_patients()
    table, long = directory / "patients.csv", directory / "efs_long.csv"
    patients.to_csv(table, index=False)
    make_long(patients).to_csv(long, index=False)
    out = directory / "out"
    done = _analyze(["--table", str(table), "--long", str(long), "--out", str(out)])
    assert done.exit_code == 0, done.output
    result = json.loads((out / "efs.json").read_text())
    return Run(table, long, out, done.output, result)


def landmark_table(path: Path) -> pd.DataFrame:
    """The CSV's patients event-free beyond day 28, with their group by day 28."""
    table = pd.read_csv(path)
    kept = table[table["efs_time_days"] > LANDMARK].copy()
    reached = np.column_stack(
        [kept[c].to_numpy(dtype=float) <= LANDMARK for c in FIRST_DAY]
    )
    level = np.where(reached.any(axis=1), 5 - np.argmax(reached[:, ::-1], axis=1), 0)
    kept["group"] = np.select(
        [level == 0, level <= 2, level <= 4], ["0", "1-2", "3-4"], "5"
    )
    return kept


def test_landmark_subset_and_groups(run: Run) -> None:
    kept = landmark_table(run.table)
    cohort = run.result["cohort"]
    assert cohort["analysed"] == len(kept)
    assert cohort["patients_in_table"] == len(pd.read_csv(run.table))
    for group in ("0", "1-2", "3-4", "5"):
        rows = kept[kept["group"] == group]
        assert run.result["groups"][group]["n"] == len(rows)
        assert run.result["groups"][group]["events"] == int(rows["efs_event"].sum())


def test_kaplan_meier_matches_lifelines_with_delayed_entry(run: Run) -> None:
    kept = landmark_table(run.table)
    for group in ("0", "1-2", "3-4"):
        rows = kept[kept["group"] == group]
        fitter = KaplanMeierFitter().fit(
            rows["efs_time_days"], rows["efs_event"], entry=np.full(len(rows), 28.0)
        )
        band = fitter.confidence_interval_
        low, high = band[band.index <= 365].iloc[-1]
        found = run.result["groups"][group]
        assert found["efs_at_horizon"] == pytest.approx(
            float(fitter.survival_function_at_times(365).iloc[0]), rel=REL
        )
        assert found["efs_ci95"] == pytest.approx([low, high], rel=REL)
        assert found["at_risk"]["90"] == int((rows["efs_time_days"] > 28 + 90).sum())
    assert run.result["analysis"]["horizon_from_origin_days"] == 365 - 28


def test_logrank_matches_lifelines(run: Run) -> None:
    kept = landmark_table(run.table)
    a, b = kept[kept["group"] == "1-2"], kept[kept["group"] == "3-4"]
    test = logrank_test(
        a["efs_time_days"], b["efs_time_days"], a["efs_event"], b["efs_event"]
    )
    found = run.result["logrank"]["grade_1_2_vs_3_4"]
    assert found["p"] == pytest.approx(test.p_value, rel=REL)
    assert found["test_statistic"] == pytest.approx(test.test_statistic, rel=REL)
    assert found["n"] == [len(a), len(b)]


def _cox(rows: pd.DataFrame) -> pd.Series:
    fitter = CoxPHFitter().fit(rows, duration_col="T", event_col="E")
    return fitter.summary.loc["severe"]


def _assert_model(found: dict[str, Any], expected: pd.Series, n: int) -> None:
    assert found["n"] == n
    assert found["hr"] == pytest.approx(expected["exp(coef)"], rel=REL)
    assert found["ci95"] == pytest.approx(
        [expected["exp(coef) lower 95%"], expected["exp(coef) upper 95%"]], rel=REL
    )
    assert found["p"] == pytest.approx(expected["p"], rel=REL)


def test_cox_crude_and_adjusted_match_lifelines(run: Run) -> None:
    kept = landmark_table(run.table)
    pair = kept[kept["group"].isin(["1-2", "3-4"])]
    design = pd.DataFrame(
        {
            "T": pair["efs_time_days"],
            "E": pair["efs_event"],
            "severe": (pair["group"] == "3-4").astype(float),
            "blasts": np.log(pair["marrow_blast_pct_preinfusion"] + 0.1),
            "emd": (pair["disease_status"] == "isolated_extramedullary").astype(float)
            .where(pair["disease_status"].notna()),
            "age": pair["age_years"],
        }
    )  # fmt: skip
    cox = run.result["cox"]
    _assert_model(cox["crude"], _cox(design[["T", "E", "severe"]]), len(design))
    complete = design.dropna()
    assert len(complete) < len(design)
    _assert_model(cox["adjusted"], _cox(complete), len(complete))
    assert cox["adjusted"]["n_dropped_missing"] == len(design) - len(complete)
    assert set(cox["adjusted"]["ph_test"]["p"]) == {
        "severe_crs",
        "ln_marrow_blasts",
        "extramedullary",
        "age_years",
    }


def test_time_varying_crude_matches_lifelines(run: Run) -> None:
    long = pd.read_csv(run.long, dtype={"patient_id": str})
    fitter = CoxTimeVaryingFitter().fit(
        long[["patient_id", "start_day", "stop_day", "event", "severe_crs_tv"]],
        id_col="patient_id",
        event_col="event",
        start_col="start_day",
        stop_col="stop_day",
    )
    expected = fitter.summary.loc["severe_crs_tv"]
    found = run.result["time_varying"]["models"]["crude"]
    assert found["hr"] == pytest.approx(expected["exp(coef)"], rel=REL)
    assert found["p"] == pytest.approx(expected["p"], rel=REL)
    assert set(run.result["time_varying"]["models"]) == {
        "crude",
        "adjusted",
        "adjusted_with_hsct",
    }


def test_outputs_markdown_png_and_headline(run: Run) -> None:
    assert run.result["notice"].startswith("Research data from crsmon")
    assert run.result["inputs"]["table"] == str(run.table)
    assert len(run.result["inputs"]["table_sha256"]) == 64
    text = (run.out / "efs.md").read_text(encoding="utf-8")
    headline = run.output.splitlines()[0]
    assert headline.startswith("1-year EFS: grade 1–2 ")
    assert f"**{headline}**" in text
    assert "Research data from crsmon, research software for monitoring and " in text
    assert "B019" in text
    image = matplotlib.image.imread(run.out / "efs_km.png")
    assert image.shape[0] > 300
    assert image.shape[1] > 300
    assert "written: " in run.output


def test_options_reach_the_analysis(run: Run, tmp_path: Path) -> None:
    done = _analyze(
        ["--table", str(run.table), "--no-landmark", "--censor-at-hsct",
         "--grade-source", "adjudicated", "--out", str(tmp_path)]
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    result = json.loads((tmp_path / "efs.json").read_text())
    analysis = result["analysis"]
    assert analysis["landmark_days"] is None
    assert analysis["censor_at_hsct"] is True
    assert analysis["grade_source"] == "adjudicated"
    assert result["time_varying"]["status"].startswith("not run")
    assert result["cohort"]["analysed"] == result["cohort"]["patients_in_table"]


def test_parquet_tables(run: Run, tmp_path: Path) -> None:
    """pyarrow is a dependency of crsmon: parquet tables always work."""
    table, long = tmp_path / "patients.parquet", tmp_path / "efs_long.parquet"
    pd.read_csv(run.table, dtype={"patient_id": str}).to_parquet(table)
    pd.read_csv(run.long, dtype={"patient_id": str}).to_parquet(long)
    out = tmp_path / "out"
    done = _analyze(["--table", str(table), "--long", str(long), "--out", str(out)])
    assert done.exit_code == 0, done.output
    result = json.loads((out / "efs.json").read_text())
    for group in ("1-2", "3-4"):
        assert result["groups"][group]["efs_at_horizon"] == pytest.approx(
            run.result["groups"][group]["efs_at_horizon"], rel=REL
        )


def test_bad_invocations(run: Run, tmp_path: Path) -> None:
    both = _analyze(
        ["--table", str(run.table), "--no-landmark", "--landmark-days", "30",
         "--out", str(tmp_path)]
    )  # fmt: skip
    assert both.exit_code == 2
    assert "not both" in both.output
    alone = _analyze(["--long", str(run.long), "--out", str(tmp_path)])
    assert alone.exit_code == 2
    assert "--long needs --table" in alone.output
    lacking = tmp_path / "lacking.csv"
    pd.read_csv(run.table).drop(columns=["efs_event"]).to_csv(lacking, index=False)
    missing = _analyze(["--table", str(lacking), "--out", str(tmp_path)])
    assert missing.exit_code == 1
    assert "efs_event" in missing.output
    text = tmp_path / "patients.txt"
    text.write_text("x")
    assert _analyze(["--table", str(text), "--out", str(tmp_path)]).exit_code == 1


def test_without_table_reads_the_database_export(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No --table: the frames of crsmon.services.exports.grade_table_frames."""
    calls: list[object] = []

    def frames(settings: object) -> tuple[pd.DataFrame, pd.DataFrame]:
        calls.append(settings)
        return (
            pd.read_csv(run.table, dtype={"patient_id": str}),
            pd.read_csv(run.long, dtype={"patient_id": str}),
        )

    monkeypatch.setattr(exports, "grade_table_frames", frames)
    monkeypatch.setenv("CRSMON_DATABASE_URL", f"sqlite:///{tmp_path / 'x.sqlite3'}")
    done = _analyze(["--out", str(tmp_path / "db")])
    assert done.exit_code == 0, done.output
    assert len(calls) == 1
    result = json.loads((tmp_path / "db" / "efs.json").read_text())
    assert result["groups"]["3-4"]["efs_at_horizon"] == pytest.approx(
        run.result["groups"]["3-4"]["efs_at_horizon"], rel=REL
    )
    assert result["inputs"]["table"].startswith("the database")


def test_cli_start_up_imports_no_analysis_library() -> None:
    """pandas, lifelines and matplotlib load inside `analyze efs`, not with the CLI."""
    code = (
        "import sys, crsmon.cli.analyze; "
        "print(','.join(m for m in ('pandas', 'lifelines', 'matplotlib') "
        "if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == ""
