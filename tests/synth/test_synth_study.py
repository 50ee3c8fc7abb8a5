"""``crsmon synth``: the study folder (feed, truth, manifest, README), byte for byte."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from synth_fields import TIME_FIELDS

from crsmon.cli import main
from crsmon.cli.ingest import ingest
from crsmon.cli.synth import synth
from crsmon.intake.parse import Refused, parse_record
from crsmon.synth import (
    DEFAULT_DATA_CUT,
    GENERATOR_VERSION,
    SOURCE_SYSTEM,
    SYNTHETIC,
    Study,
    StudySpec,
)

FILES = ("feed.ndjson", "truth.jsonl", "manifest.json", "README.txt")
FREE_TEXT = ("care_unit", "by", "reason", "correction_reason", "note")


def run(out: Path, *args: str) -> Result:
    result = CliRunner().invoke(main, ["synth", "--out", str(out), *args])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("study")
    run(out, "--patients", "40", "--seed", "5")
    return out


def feed_records(folder: Path) -> list[dict[str, Any]]:
    text = (folder / "feed.ndjson").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


def truth(folder: Path) -> list[dict[str, Any]]:
    text = (folder / "truth.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


def test_the_same_seed_gives_byte_identical_files(folder: Path, tmp_path: Path) -> None:
    """risk.md §3.7.7: every file, byte for byte; another seed, another feed."""
    run(tmp_path / "again", "--patients", "40", "--seed", "5")
    for name in FILES:
        assert (tmp_path / "again" / name).read_bytes() == (folder / name).read_bytes()
    run(tmp_path / "other", "--patients", "40", "--seed", "6")
    other = (tmp_path / "other" / "feed.ndjson").read_bytes()
    assert other != (folder / "feed.ndjson").read_bytes()


def test_the_folder_is_labelled_synthetic(folder: Path) -> None:
    readme = (folder / "README.txt").read_text(encoding="utf-8")
    assert readme.startswith("SYNTHETIC DATA")
    assert "never an input to crsmon" in readme
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["label"] == "SYNTHETIC DATA"
    assert manifest["generator_version"] == GENERATOR_VERSION
    assert (manifest["seed"], manifest["patients"], manifest["days"]) == (5, 40, 28)
    assert manifest["data_cut"] == DEFAULT_DATA_CUT.isoformat()
    assert manifest["design"]["grade_mode"] == "latent"
    assert manifest["design"]["toci_modifies_course"] is False
    assert manifest["planted_faults"] is False
    for name in ("feed.ndjson", "truth.jsonl"):
        data = (folder / name).read_bytes()
        assert manifest["files"][name] == {
            "lines": data.count(b"\n"),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
    header, *patients = truth(folder)
    assert header["label"] == "SYNTHETIC DATA"
    assert "evaluation code only" in header["note"]
    assert len(patients) == 40
    assert [p["pseudonym"] for p in patients] == [f"SYN-{i:04d}" for i in range(1, 41)]


def test_every_line_is_a_valid_synthetic_record_in_time_order(folder: Path) -> None:
    """Accepted by the intake's parser; labelled; in order; none after the cut."""
    text = (folder / "feed.ndjson").read_text(encoding="utf-8")
    sent = []
    infusions: dict[str, datetime] = {}
    for line in text.splitlines():
        parsed = parse_record(line, DEFAULT_DATA_CUT)
        assert not isinstance(parsed, Refused), (line, parsed)
        record = json.loads(line)
        assert record["source_system"] == SOURCE_SYSTEM
        assert record["patient"].startswith("SYN-")
        texts = [record[k] for k in FREE_TEXT if record.get(k) is not None]
        if "product" in record:
            texts.append(record["product"]["name"])
        assert all(t.startswith(SYNTHETIC) for t in texts), line
        times = [
            datetime.fromisoformat(record[k])
            for k in TIME_FIELDS
            if record.get(k) is not None
        ]
        assert max(times) <= DEFAULT_DATA_CUT
        if record["kind"] == "patient":
            infusions[record["patient"]] = max(times)
        # a line is sent at its latest time; the pre-infusion panel with the
        # enrolment
        sent.append(max(max(times), infusions[record["patient"]]))
    assert sent == sorted(sent)
    records = feed_records(folder)
    kinds = Counter(r["kind"] for r in records)
    assert {"patient", "vitals", "oxygen", "lab", "treatment", "outcome"} <= set(kinds)
    assert {"transfer", "fluid_bolus", "vasopressor_start", "attribution"} <= set(kinds)
    assert kinds["patient"] == 40


def test_outcomes_are_charted_up_to_the_data_cut(folder: Path) -> None:
    records = feed_records(folder)
    outcomes = [r for r in records if r["kind"] == "outcome"]
    events = Counter(r["event"] for r in outcomes)
    assert events["response"] >= 30
    assert events["last_follow_up"] + events["death"] == 40
    assert {"relapse", "hsct"} <= set(events)
    for r in outcomes:
        if r["event"] == "death":
            assert isinstance(r["death_attributable_to_crs"], bool)
        if r["event"] == "last_follow_up":
            assert r["at"] == DEFAULT_DATA_CUT.isoformat()
    by_patient = {p["pseudonym"]: p for p in truth(folder)[1:]}
    for r in outcomes:
        known = by_patient[r["patient"]]["outcomes"]
        if r["event"] == "relapse":
            assert known["relapse_day"] is not None
        if r["event"] == "response":
            assert known["response_d28"] == "CR"


def test_the_truth_file_holds_the_hidden_values(folder: Path) -> None:
    enrolled = {r["patient"]: r for r in feed_records(folder) if r["kind"] == "patient"}
    for p in truth(folder)[1:]:
        assert 0 < p["p_true_base"] < 1
        assert p["observed_max_grade"] == p["charted_max_grade"]
        assert p["potential_max_grade"] == p["crs"]["potential_max_grade"]
        assert set(p["latent"]) == {
            "load_pct",
            "z_load",
            "z_viab",
            "z_endo",
            "u",
            "E",
            "epsilon",
            "S",
        }
        assert p["outcomes"]["efs_time_days"] <= p["follow_up_days"]
        enrolment = enrolled[p["pseudonym"]]
        assert enrolment["infusion_at"] == p["infusion_at"]
        assert enrolment["marrow_blast_pct"] == p["baseline"]["marrow_blast_pct"]
        assert enrolment["product"]["viability_pct"] == p["baseline"]["viability_pct"]
        accrual = datetime.fromisoformat(p["infusion_at"])
        assert DEFAULT_DATA_CUT - accrual >= timedelta(days=6 * 30)


def test_the_feed_goes_through_crsmon_ingest(tmp_path: Path) -> None:
    """Every line stored by the real intake (two patients, 28 days)."""
    out = tmp_path / "small"
    run(out, "--patients", "2", "--seed", "3")
    url = f"sqlite:///{tmp_path / 'ingest.sqlite3'}"
    result = CliRunner().invoke(
        ingest, [str(out / "feed.ndjson")], env={"CRSMON_DATABASE_URL": url}
    )
    assert result.exit_code == 0, result.output
    lines = (out / "feed.ndjson").read_text(encoding="utf-8").count("\n")
    assert f"ingested: {lines} stored; 2 patients graded" in result.output


def test_planted_faults_are_off_by_default_and_on_request(tmp_path: Path) -> None:
    run(tmp_path / "faults", "--patients", "3", "--days", "5", "--planted-faults")
    text = (tmp_path / "faults" / "feed.ndjson").read_text(encoding="utf-8")
    refused = [
        line
        for line in text.splitlines()
        if isinstance(parse_record(line, DEFAULT_DATA_CUT), Refused)
    ]
    assert len(refused) == 4  # the fifth fault is a patient never enrolled
    lines = text.splitlines()
    assert len(lines) - len(set(lines)) == 1  # one line sent twice
    assert any('"patient": "SYN-0000"' in line for line in lines)
    manifest = json.loads((tmp_path / "faults" / "manifest.json").read_text())
    assert manifest["planted_faults"] is True


def test_options_reach_the_design(tmp_path: Path) -> None:
    out = tmp_path / "options"
    args = ["--patients", "5", "--days", "3", "--grade-mode", "quota"]
    args += ["--toci-modifies-course", "--data-cut", "2024-01-01T00:00:00+01:00"]
    result = run(out, *args)
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["design"]["grade_mode"] == "quota"
    assert manifest["design"]["toci_modifies_course"] is True
    assert manifest["data_cut"] == "2023-12-31T23:00:00+00:00"
    assert "SYNTHETIC DATA patients" in result.output
    assert "tocilizumab" in result.output


def test_a_previous_study_is_replaced_and_anything_else_left_alone(
    tmp_path: Path,
) -> None:
    out = tmp_path / "study"
    run(out, "--patients", "2", "--days", "2")
    run(out, "--patients", "3", "--days", "2")
    assert len(truth(out)) == 4
    other = tmp_path / "other"
    other.mkdir()
    (other / "feed.ndjson").write_text("mine\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["synth", "--out", str(other)])
    assert result.exit_code == 1
    assert "not written by crsmon synth" in result.output
    assert (other / "feed.ndjson").read_text(encoding="utf-8") == "mine\n"
    (other / "manifest.json").write_text("[1]", encoding="utf-8")
    assert CliRunner().invoke(main, ["synth", "--out", str(other)]).exit_code == 1


@pytest.mark.parametrize(
    ("cut", "message"),
    [
        ("2999-01-01T00:00:00+00:00", "future"),
        ("2025-01-01T00:00:00", "UTC offset"),
        ("last year", "ISO 8601"),
    ],
)
def test_a_bad_data_cut_is_a_usage_error(
    tmp_path: Path, cut: str, message: str
) -> None:
    result = CliRunner().invoke(
        main, ["synth", "--out", str(tmp_path), "--data-cut", cut]
    )
    assert result.exit_code == 2
    assert message in result.output


def test_the_study_api_guards() -> None:
    study = Study(StudySpec(patients=2, seed=1, days=2))
    with pytest.raises(RuntimeError, match="lines"):
        study.truth()
    with pytest.raises(ValueError, match="patients"):
        StudySpec(patients=0, seed=1)
    with pytest.raises(ValueError, match="days"):
        StudySpec(patients=1, seed=1, days=1)
    with pytest.raises(ValueError, match="tz-aware"):
        StudySpec(patients=1, seed=1, data_cut=datetime(2025, 1, 1))  # noqa: DTZ001
    spec = StudySpec(patients=1, seed=1, data_cut=datetime(2025, 1, 1, tzinfo=UTC))
    assert spec.accrual_opens.year == 2022


def test_every_option_is_documented() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "synthetic-cohort.md").read_text(
        encoding="utf-8"
    )
    for param in synth.params:
        for flag in getattr(param, "opts", []):
            assert f"`{flag}`" in doc, flag
    assert "CRSMON_FULL_SYNTH=1" in doc
    assert "never read by anything in crsmon" in doc
