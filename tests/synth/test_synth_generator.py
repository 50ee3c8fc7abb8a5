"""The synthetic generator: seeded, pure, valid, and as large as the demo needs."""

from __future__ import annotations

import ast
import json
import sys
from collections import defaultdict
from datetime import UTC, datetime, timedelta, timezone
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from synth_fields import TIME_FIELDS

from crsmon.intake.parse import Refused, parse_record
from crsmon.synth import (
    SOURCE_SYSTEM,
    SYNTHETIC,
    CohortDesign,
    FeedLine,
    SyntheticFeed,
    build_feed,
    draw_cohort,
)
from crsmon.synth.cohort import quota
from crsmon.synth.course import sbp_limits

NOW = datetime(2025, 6, 1, 12, 0, 7, 123456, tzinfo=UTC)
SYNTH = Path(__file__).parents[2] / "crsmon" / "synth"
VITALS = (
    "temperature_c",
    "sbp_mmhg",
    "dbp_mmhg",
    "heart_rate_per_min",
    "respiratory_rate_per_min",
    "spo2_pct",
)
CLINICAL_KINDS = (
    "vasopressor_start",
    "vasopressor_stop",
    "fluid_bolus",
    "oxygen",
    "treatment",
    "attribution",
)
FREE_TEXT = ("care_unit", "by", "reason", "correction_reason", "note")


@pytest.fixture(scope="module")
def feed() -> SyntheticFeed:
    return build_feed(NOW)


def _good(feed: SyntheticFeed) -> list[FeedLine]:
    return [line for line in feed.lines if line.planted is None]


def _time(record: dict[str, Any]) -> datetime:
    keys = ("observed_at", "given_at", "started_at", "stopped_at")
    key = next(k for k in keys if k in record)
    return datetime.fromisoformat(record[key])


def test_same_seed_and_now_give_the_same_feed(feed: SyntheticFeed) -> None:
    """Byte for byte, and the ground truth too."""
    again = build_feed(NOW)
    assert again.ndjson() == feed.ndjson()
    assert [p.course.truth for p in again.patients] == [
        p.course.truth for p in feed.patients
    ]


def test_another_seed_gives_another_feed(feed: SyntheticFeed) -> None:
    assert build_feed(NOW, seed=8).ndjson() != feed.ndjson()


def test_a_later_now_moves_every_time_and_nothing_else(feed: SyntheticFeed) -> None:
    """The feed is defined relative to ``now``: the same lines, a day later."""
    later = build_feed(NOW + timedelta(days=1))
    assert [line.source_record_id for line in later.lines] == [
        line.source_record_id for line in feed.lines
    ]
    assert all(
        b.at - a.at == timedelta(days=1)
        for a, b in zip(feed.lines, later.lines, strict=True)
    )


def test_every_line_is_at_or_before_now_and_in_time_order(feed: SyntheticFeed) -> None:
    times = [line.at for line in feed.lines]
    assert times == sorted(times)
    assert times[-1] <= NOW
    for line in _good(feed):
        record = json.loads(line.text)
        for key in TIME_FIELDS:
            if record.get(key) is not None:
                assert datetime.fromisoformat(record[key]) <= line.at <= NOW


def test_now_in_another_zone_gives_utc_times() -> None:
    """``now`` may carry any offset; the feed is written in UTC."""
    paris = timezone(timedelta(hours=2))
    local = build_feed(NOW.astimezone(paris), patients=2, days=3)
    assert local.ndjson() == build_feed(NOW, patients=2, days=3).ndjson()
    assert '+00:00"' in local.lines[0].text


def test_good_records_are_accepted_and_planted_ones_refused(
    feed: SyntheticFeed,
) -> None:
    """Every record parses strictly, except the planted faults (for their reason)."""
    enrolled = {p.pseudonym for p in feed.patients}
    for line in feed.lines:
        parsed = parse_record(line.text, line.at)
        if line.expect != "refused":
            assert not isinstance(parsed, Refused), (line.text, parsed)
        elif line.expect_error == "patient":  # refused at storage, not parsing
            assert not isinstance(parsed, Refused)
            assert json.loads(line.text)["patient"] not in enrolled
        else:
            assert isinstance(parsed, Refused), line.text
            assert parsed.error.startswith(f"{line.expect_error}:"), parsed.error
            assert parsed.source_record_id == line.source_record_id


def test_planted_faults_are_few_and_varied(feed: SyntheticFeed) -> None:
    refused = [line for line in feed.planted if line.expect == "refused"]
    fields = {"temperature_c", "observed_at", "heart_rate", "fio2", "patient"}
    assert {line.expect_error for line in refused} == fields
    assert [line.expect for line in feed.planted].count("duplicate") == 1
    duplicate = next(line for line in feed.planted if line.expect == "duplicate")
    assert sum(line.text == duplicate.text for line in feed.lines) == 2
    assert len(feed.planted) < len(feed.lines) / 100


def test_at_least_20_patients_with_14_days_of_4_hourly_vitals(
    feed: SyntheticFeed,
) -> None:
    """Vitals every 4 h from infusion to (within 4 h of) now, all six signs."""
    assert len(feed.patients) == 20
    vitals: dict[str, list[datetime]] = defaultdict(list)
    for line in _good(feed):
        if line.kind == "vitals":
            record = json.loads(line.text)
            assert set(VITALS) <= set(record)
            vitals[line.patient].append(_time(record))
    for patient in feed.patients:
        times = vitals[patient.pseudonym]
        assert len(times) >= 14 * 6 + 1
        assert times[0] == patient.infusion_at
        assert {b - a for a, b in pairwise(times)} == {timedelta(hours=4)}
        assert timedelta(0) <= NOW - times[-1] < timedelta(hours=4)
        assert NOW - patient.infusion_at >= timedelta(days=14)


def test_labs_every_12_to_24_hours(feed: SyntheticFeed) -> None:
    """From infusion: CRP every 12 h; ferritin, IL-6 (where the site measures
    it), platelets, LDH and creatinine every 24 h."""
    labs: dict[tuple[str, str], list[datetime]] = defaultdict(list)
    for line in _good(feed):
        if line.kind == "lab":
            record = json.loads(line.text)
            labs[(line.patient, record["analyte"])].append(_time(record))
    every = {"crp": 12, "ferritin": 24, "il6": 24}
    every |= {"platelets": 24, "ldh": 24, "creatinine": 24}
    for patient in feed.patients:
        for analyte, hours in every.items():
            times = [
                t
                for t in labs[(patient.pseudonym, analyte)]
                if t >= patient.infusion_at
            ]
            if analyte == "il6" and not patient.baseline.il6_measured:
                assert times == []
                continue
            gaps = {b - a for a, b in pairwise(times)}
            assert gaps == {timedelta(hours=hours)}, (patient.pseudonym, analyte)
    measured = [p.baseline.il6_measured for p in feed.patients]
    assert any(measured)
    assert not all(measured)  # 40 % of sites do not measure IL-6


def test_the_pre_infusion_panel_is_in_the_feed(feed: SyntheticFeed) -> None:
    """The baseline labs, drawn 24–72 h before infusion, sent with the enrolment."""
    for patient in feed.patients:
        b = patient.baseline
        panel = {}
        for line in _good(feed):
            record = json.loads(line.text)
            if line.patient != b.pseudonym or line.kind != "lab":
                continue
            if _time(record) < patient.infusion_at:
                panel[record["analyte"]] = record["value"]
                assert line.at == patient.infusion_at
                before = patient.infusion_at - _time(record)
                assert timedelta(hours=24) <= before <= timedelta(hours=72)
        assert panel == {
            "platelets": b.platelets_10e9_l,
            "crp": b.crp_mg_l,
            "ldh": b.ldh_u_l,
            "ferritin": b.ferritin_ug_l,
            "creatinine": b.creatinine_mg_dl,
        }
        # m-EASIX from the feed's own values is the latent model's input
        m_easix = b.ldh_u_l * b.crp_mg_l / 10 / b.platelets_10e9_l
        assert b.m_easix == pytest.approx(m_easix, abs=1e-4)


def test_the_cohort_has_every_grade_and_treatments_after_onset(
    feed: SyntheticFeed,
) -> None:
    """Most patients have CRS (onset from hour 4, a few late, up to day 22); a
    few reach grade 3–4; drugs are given after onset (and for an infection
    fever, only then)."""
    grades = [p.course.max_grade for p in feed.patients]
    assert {0, 1, 2, 3, 4} <= set(grades)
    assert sum(g >= 1 for g in grades) >= 15
    assert 1 <= sum(g >= 3 for g in grades) <= 5
    for patient in feed.patients:
        course = patient.course
        onset_h = course.truth["fever_onset_h"]
        if course.max_grade:
            assert onset_h is not None
            assert 4 <= onset_h <= 22 * 24
            assert course.onset_min is not None
        doses = [e for e in course.events if e.kind == "treatment"]
        if course.onset_min is not None:
            assert all(e.at_min >= course.onset_min for e in doses)
        elif doses:
            assert course.truth["infection_fever_h"] is not None
    kinds = {line.kind for line in _good(feed)}
    assert set(CLINICAL_KINDS) <= kinds
    given = [json.loads(line.text) for line in _good(feed) if line.kind == "treatment"]
    drugs = {record["drug"] for record in given}
    assert {"acetaminophen", "tocilizumab", "dexamethasone"} <= drugs


def test_synthetic_in_every_free_text_field_and_sender(feed: SyntheticFeed) -> None:
    for line in feed.lines:
        record = json.loads(line.text)
        assert record["source_system"] == SOURCE_SYSTEM
        assert record["patient"].startswith("SYN-")
        texts = [record[k] for k in FREE_TEXT if record.get(k) is not None]
        if "product" in record:
            texts.append(record["product"]["name"])
        assert all(text.startswith(SYNTHETIC) for text in texts), line.text


def test_blood_pressure_says_the_same_under_every_threshold(
    feed: SyntheticFeed,
) -> None:
    """Hypotensive readings are below every pediatric threshold; others above."""
    assert sbp_limits(7.9) == (79.0, 84.0)
    assert sbp_limits(15.0) == (90.0, 95.0)
    assert sbp_limits(19.0) == (90.0, 90.0)
    by_name = {p.pseudonym: p for p in feed.patients}
    for line in _good(feed):
        if line.kind != "vitals":
            continue
        record = json.loads(line.text)
        patient = by_name[line.patient]
        years = (_time(record) - patient.infusion_at) / timedelta(days=365.25)
        low, high = sbp_limits(patient.baseline.age_years + years)
        assert not low <= record["sbp_mmhg"] < high + 4 or (
            patient.baseline.organ in ("hypotension", "both")
        )


def test_quota_gives_exact_counts() -> None:
    assert quota((0.12, 0.38, 0.32, 0.12, 0.06), 20) == [3, 8, 6, 2, 1]
    assert sum(quota((0.12, 0.38, 0.32, 0.12, 0.06), 7)) == 7
    assert quota((0.5, 0.5), 1) == [1, 0]


def test_patient_draws_do_not_depend_on_the_cohort_size() -> None:
    """Patient i's baseline (besides its allocated grade) is its own stream."""
    small = draw_cohort(3, 7, CohortDesign())
    large = draw_cohort(30, 7, CohortDesign())
    assert [p.age_years for p in small] == [p.age_years for p in large[:3]]


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="tz-aware"):
        build_feed(datetime(2025, 6, 1))  # noqa: DTZ001 - the naive time is the point
    with pytest.raises(ValueError, match="days"):
        build_feed(NOW, days=1)
    with pytest.raises(ValueError, match="n:"):
        draw_cohort(0, 7, CohortDesign())
    with pytest.raises(ValueError, match="grade_shares"):
        CohortDesign(grade_shares=(0.5, 0.5))
    with pytest.raises(ValueError, match="infection_fever_share"):
        CohortDesign(infection_fever_share=2)


FORBIDDEN_CALLS = {"open", "print", "input", "now", "utcnow", "today", "getenv", "time"}
FORBIDDEN_MODULES = {
    "os",
    "sys",
    "io",
    "pathlib",
    "time",
    "socket",
    "subprocess",
    "tempfile",
    "shutil",
    "sqlite3",
    "threading",
    "secrets",
    "uuid",
}


@pytest.mark.parametrize("path", sorted(SYNTH.glob("*.py")), ids=lambda p: p.name)
def test_the_generator_is_pure(path: Path) -> None:
    """No clock, I/O or environment; only the standard library and crsmon.synth."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        else:
            names = []
        for name in names:
            top = name.split(".")[0]
            assert top in sys.stdlib_module_names or name.startswith("crsmon.synth")
            assert top not in FORBIDDEN_MODULES, name
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute):
                called = func.attr
            else:
                called = getattr(func, "id", "")
            assert called not in FORBIDDEN_CALLS, f"{path.name} calls {called}()"
