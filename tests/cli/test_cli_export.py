"""``crsmon export``: the research tables from the configured database, in process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner

from crsmon.cli import main
from crsmon.services.exports import GRADE_TABLE, NOTICE, read_table

INFUSION = "2025-03-01T08:00:00+00:00"
FEED = [
    {
        "kind": "patient",
        "source_system": "ehr",
        "source_record_id": "enrol-1",
        "patient": "P-1",
        "age_years": 8.0,
        "care_unit": "SYNTHETIC-PICU",
        "disease_status": "hematologic",
        "marrow_blast_pct": 35.0,
        "infusion_at": INFUSION,
    },
    {
        "kind": "vitals",
        "source_system": "mon",
        "source_record_id": "v-1",
        "patient": "P-1",
        "observed_at": "2025-03-02T08:00:00+00:00",
        "temperature_c": 39.2,
        "sbp_mmhg": 78,
        "dbp_mmhg": 40,
    },
    {
        "kind": "fluid_bolus",
        "source_system": "mon",
        "source_record_id": "b-1",
        "patient": "P-1",
        "given_at": "2025-03-02T08:10:00+00:00",
        "for_hypotension": True,
    },
    {
        "kind": "outcome",
        "source_system": "ehr",
        "source_record_id": "o-1",
        "patient": "P-1",
        "at": "2025-03-29T08:00:00+00:00",
        "event": "no_response",
    },
]


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CRSMON_DATABASE_URL", f"sqlite:///{tmp_path / 'db.sqlite3'}")
    monkeypatch.setenv("CRSMON_RISK_MODEL_DIR", "")
    runner = CliRunner()
    assert runner.invoke(main, ["db", "upgrade"]).exit_code == 0
    feed = tmp_path / "feed.ndjson"
    feed.write_text("".join(json.dumps(r) + "\n" for r in FEED))
    result = runner.invoke(main, ["ingest", str(feed)])
    assert result.exit_code == 0, result.output
    return tmp_path


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_grade_table(database: Path, fmt: str) -> None:
    out = database / f"grades.{fmt}"
    result = CliRunner().invoke(
        main, ["export", "grade-table", "--format", fmt, "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "1 rows written" in result.output
    assert "not for clinical decisions" in result.output
    table = read_table(out)
    assert list(table.columns) == [c.name for c in GRADE_TABLE]
    row = table.iloc[0]
    assert row["patient_id"] == "P-1"
    assert row["crs_max_grade_astct"] == 2
    assert row["crs_driver"] == "hypotension"
    assert row["response_d28"] == "no_response"
    assert (row["efs_time_days"], row["efs_event_type"]) == (28.0, "nr")
    assert not row["landmark28_eligible"]
    sidecar = json.loads(Path(f"{out}.dictionary.json").read_text())
    assert sidecar["notice"] == NOTICE


def test_export_long_tables_and_options(database: Path) -> None:
    runner = CliRunner()
    for table, rows in (("efs-long", 1), ("adtte", 3)):
        out = database / f"{table}.csv"
        result = runner.invoke(main, ["export", table, "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert len(pd.read_csv(out)) == rows
    early = database / "early.csv"
    bad = runner.invoke(
        main, ["export", "grade-table", "--out", str(early), "--rule-set", "nope"]
    )
    assert bad.exit_code == 2
    assert "--rule-set" in bad.output


def test_a_failed_export_leaves_no_file_that_looks_complete(tmp_path: Path) -> None:
    """Rows that fail half-way: neither the table nor its dictionary appears,
    and an earlier export at the same place is left as it was."""
    from crsmon.services.exports import write_table

    def rows() -> Iterator[dict[str, Any]]:
        yield {c.name: None for c in GRADE_TABLE} | {"patient_id": "P-1"}
        raise RuntimeError("the database went away")

    out = tmp_path / "grades.csv"
    out.write_text("earlier export\n")
    with pytest.raises(RuntimeError):
        write_table("grade-table", rows(), out, "csv")
    assert out.read_text() == "earlier export\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grades.csv"]
    assert write_table("grade-table", iter([]), out, "parquet") == 0
    sidecar = json.loads((tmp_path / "grades.csv.dictionary.json").read_text())
    assert (sidecar["rows"], sidecar["format"]) == (0, "parquet")
