"""Spec: which alerts a graded episode calls for (grading.md, "Alerts").

Each case is an episode table (``t`` in hours since infusion, the input columns
of ``spec_tables``, an optional ``rec`` record id and the expected ``grade`` of
each observation) and the table of alerts it must give, in order: their time,
kind, severity, grade, whether they are pushed, the record that triggered them
and their dedup key. The service stores an alert once per patient and key.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import pytest
from spec_tables import build_assessment, cases, parse_table

from crsmon.domain import Episode, Treatment, grade_episode, resolve_rule_set
from crsmon.domain.alerts import (
    AlertDecision,
    AlertKind,
    RecordFlag,
    RiskSignal,
    Severity,
    decide_alerts,
    stale_gaps,
    vital_sign_times,
)
from crsmon.domain.results import EpisodeResult
from crsmon.domain.vocab import TreatmentDrug


def graded(
    table: str, treatments: dict[float, str] | None = None, *, reverse: bool = False
) -> tuple[EpisodeResult, dict[int, str]]:
    """Grade an episode table, check each grade, and map input index to ``rec``."""
    rows = parse_table(table)
    if reverse:
        rows.reverse()
    episode = Episode(
        age_years=34.0,
        observations=tuple(
            replace(build_assessment(r), t_hours=float(r["t"])) for r in rows
        ),
        treatments=tuple(
            Treatment(t, TreatmentDrug(d)) for t, d in (treatments or {}).items()
        ),
    )
    result = grade_episode(episode, resolve_rule_set("astct-2019"))
    expected = [int(rows[o.input_index]["grade"]) for o in result.observations]
    assert list(result.per_observation_grades) == expected
    records = {i: r["rec"] for i, r in enumerate(rows) if r.get("rec")}
    return result, records


def alerts(
    table: str, treatments: dict[float, str] | None = None, **options: Any
) -> tuple[AlertDecision, ...]:
    """The alerts for an episode table, with the record ids of its ``rec`` column."""
    result, records = graded(table, treatments)
    return decide_alerts(result, record_ids=records, **options)


def expect(decisions: tuple[AlertDecision, ...], table: str) -> None:
    """The decisions are exactly the rows of an alert table, in order."""
    want = [
        (
            float(r["t"]),
            r["kind"],
            r["severity"],
            int(r["grade"]) if r["grade"] else None,
            r["push"] == "y",
            r.get("rec") or None,
            r["key"],
        )
        for r in parse_table(table)
    ]
    got = [
        (d.t_hours, d.kind, d.severity, d.grade, d.push, d.record_id, d.dedup_key)
        for d in decisions
    ]
    assert got == want, "\n".join(map(str, got))


ESCALATION = """
| t  | temp | o2            | flow | pressors       | grade |
| 10 | 38.5 |               |      |                | 1     |
| 20 | 38.6 | nasal_cannula | 2    |                | 2     |
| 30 | 38.7 |               |      | norepinephrine | 3     |
| 40 | 38.4 | nasal_cannula | 2    |                | 2     |
| 50 | 38.9 |               |      | norepinephrine | 3     |
"""
ESCALATION_ALERTS = """
| t  | kind           | severity | grade | push | key                                |
| 10 | crs_onset      | warning  | 1     | n    | crs_onset:course@10.0              |
| 20 | crs_escalation | warning  | 2     | n    | crs_escalation:course@10.0:grade=2 |
| 30 | crs_escalation | critical | 3     | n    | crs_escalation:course@10.0:grade=3 |
| 30 | severe_crs     | critical | 3     | y    | severe_crs:course@10.0             |
"""


def test_escalation_once_per_grade_reached() -> None:
    """1 -> 2 -> 3 -> 2 -> 3: escalation to 2 and to 3 once each; severe once."""
    decisions = alerts(ESCALATION)
    expect(decisions, ESCALATION_ALERTS)
    onset = decisions[0]
    assert onset.rule_set == "astct-2019"
    assert any("[R4]" in text for text in onset.reasons)
    assert any("[R5]" in text for text in decisions[-1].reasons)


MODERATE = """
| t  | temp | o2            | flow | grade |
| 10 | 38.2 |               |      | 1     |
| 16 | 38.8 | nasal_cannula | 3    | 2     |
| 22 | 38.1 | nasal_cannula | 3    | 2     |
"""
MODERATE_ALERTS = """
| t  | kind           | severity | grade | push | key                                |
| 10 | crs_onset      | warning  | 1     | n    | crs_onset:course@10.0              |
| 16 | crs_escalation | warning  | 2     | n    | crs_escalation:course@10.0:grade=2 |
"""


def test_grade_2_is_not_severe() -> None:
    """A course that peaks at grade 2 raises no severe_crs and nothing to push."""
    expect(alerts(MODERATE), MODERATE_ALERTS)


NO_FEVER = """
| t  | temp | pressors       | o2    | attrib | grade |
| 10 | 37.9 | norepinephrine |       |        | 0     |
| 20 | 37.5 |                | bipap |        | 0     |
| 30 | 39.2 |                |       | fever  | 0     |
"""


def test_no_onset_without_fever() -> None:
    """Without a qualifying fever (R2, R7) there is no course, so no grade alert."""
    assert alerts(NO_FEVER) == ()


DEATH = """
| t  | temp | o2            | flow | death | grade |
| 24 | 38.4 | nasal_cannula | 2    |       | 2     |
| 30 | 36.5 | bipap         |      | crs   | 5     |
"""
DEATH_ALERTS = """
| t  | kind           | severity | grade | push | key                                |
| 24 | crs_onset      | warning  | 2     | n    | crs_onset:course@24.0              |
| 30 | crs_escalation | critical | 5     | n    | crs_escalation:course@24.0:grade=5 |
| 30 | severe_crs     | critical | 5     | y    | severe_crs:course@24.0             |
| 30 | crs_death      | critical | 5     | y    | crs_death:course@24.0              |
"""
DEATH_OTHER_CAUSE = """
| t  | temp | o2    | death | grade |
| 24 | 38.4 |       |       | 1     |
| 30 | 38.5 | bipap | other | 4     |
"""
DEATH_OTHER_CAUSE_ALERTS = """
| t  | kind           | severity | grade | push | key                                |
| 24 | crs_onset      | warning  | 1     | n    | crs_onset:course@24.0              |
| 30 | crs_escalation | critical | 4     | n    | crs_escalation:course@24.0:grade=4 |
| 30 | severe_crs     | critical | 4     | y    | severe_crs:course@24.0             |
"""


def test_crs_death() -> None:
    """R9: a death attributed to CRS raises crs_death; another cause does not."""
    expect(alerts(DEATH), DEATH_ALERTS)
    expect(alerts(DEATH_OTHER_CAUSE), DEATH_OTHER_CAUSE_ALERTS)


RECURRENCE = """
| t   | temp | pressors       | grade |
| 24  | 38.4 |                | 1     |
| 36  | 37.0 |                | 0     |
| 72  | 37.0 |                | 0     |
| 100 | 38.9 | norepinephrine | 3     |
| 110 | 37.0 |                | 0     |
"""
RECURRENCE_ALERTS = """
| t   | kind       | severity | grade | push | key                    |
| 24  | crs_onset  | warning  | 1     | n    | crs_onset:course@24.0  |
| 100 | crs_onset  | critical | 3     | n    | crs_onset:course@100.0 |
| 100 | severe_crs | critical | 3     | y    | severe_crs:course@100.0 |
"""


def test_recurrence_raises_a_new_onset_with_its_own_key() -> None:
    """§5.5: a second course has its own onset, severe and escalation keys."""
    expect(alerts(RECURRENCE), RECURRENCE_ALERTS)


MASKED = """
| t  | temp | sbp | bolus | grade |
| 2  | 37.3 | 84  | y     | 0     |
| 4  | 37.2 | 85  | y     | 0     |
| 6  | 37.0 | 120 |       | 0     |
| 8  | 37.1 | 84  | y     | 0     |
| 20 | 38.6 |     |       | 1     |
| 26 | 37.9 | 86  | y     | 0     |
| 28 | 37.9 | 86  | y     | 0     |
"""
MASKED_ALERTS = """
| t  | kind                | severity | grade | push | key                                |
| 2  | possible_masked_crs | warning  | 0     | n    | possible_masked_crs:run@2.0        |
| 8  | possible_masked_crs | warning  | 0     | n    | possible_masked_crs:run@8.0        |
| 20 | crs_onset           | warning  | 1     | n    | crs_onset:course@20.0              |
| 26 | possible_masked_crs | warning  | 0     | n    | possible_masked_crs:course@20.0    |
"""


def test_possible_masked_crs_once_per_run_or_course() -> None:
    """A3: before onset, once per run of flagged moments; in a course, once."""
    decisions = alerts(MASKED, {0: "acetaminophen"})
    expect(decisions, MASKED_ALERTS)
    assert all("masking fever" in d.reasons[0] for d in decisions if d.grade == 0)


HYPOXEMIA = """
| t  | temp | spo2 | o2            | flow | grade |
| 10 | 38.5 |      |               |      | 1     |
| 20 | 37.0 |      |               |      | 0     |
| 30 | 37.0 | 85   |               |      | 0     |
| 50 | 37.0 |      |               |      | 0     |
| 60 | 37.0 | 85   |               |      | 0     |
| 61 | 37.0 | 86   |               |      | 0     |
| 62 | 37.0 | 84   | nasal_cannula | 2    | 0     |
| 70 | 37.0 |      |               |      | 0     |
| 80 | 37.0 | 84   |               |      | 0     |
"""
HYPOXEMIA_ALERTS = """
| t  | kind                      | severity | grade | push | key                                   |
| 10 | crs_onset                 | warning  | 1     | n    | crs_onset:course@10.0                 |
| 30 | hypoxemia_without_support | warning  | 0     | n    | hypoxemia_without_support:course@10.0 |
| 60 | hypoxemia_without_support | warning  | 0     | n    | hypoxemia_without_support:run@60.0    |
| 80 | hypoxemia_without_support | warning  | 0     | n    | hypoxemia_without_support:run@80.0    |
"""


def test_hypoxemia_without_support_once_per_course_or_run() -> None:
    """A14: the course lasts until resolution is confirmed (50 h), then runs count."""
    expect(alerts(HYPOXEMIA), HYPOXEMIA_ALERTS)


QUALITY = """
| t  | rec | temp | o2            | flow | death   | grade |
| 10 | a   | 42.0 | nasal_cannula | 0    |         | 2     |
| 10 | b   | 38.5 | nasal_cannula | 0    |         | 2     |
| 12 | a   | 42.0 | nasal_cannula | 0    |         | 2     |
| 14 | c   | 38.5 | room_air      | 2    |         | 1     |
| 16 | d   | 38.5 |               |      | unknown | 1     |
"""
QUALITY_ALERTS = """
| t  | kind         | severity | grade | push | rec | key                                           |
| 10 | crs_onset    | warning  | 2     | n    | a   | crs_onset:course@10.0                         |
| 10 | data_quality | info     | 2     | n    | a   | data_quality:record=a:oxygen.flow_l_min       |
| 10 | data_quality | info     | 2     | n    | a   | data_quality:record=a:temperature_c           |
| 10 | data_quality | info     | 2     | n    | b   | data_quality:record=b:oxygen.flow_l_min       |
| 14 | data_quality | info     | 1     | n    | c   | data_quality:record=c:oxygen.flow_l_min       |
| 16 | data_quality | info     | 1     | n    | d   | data_quality:record=d:death_attributable_to_crs |
"""


def test_data_quality_once_per_record_and_field() -> None:
    """Each record and field alerts once, with the flag message as its reason."""
    decisions = alerts(QUALITY)
    expect(decisions, QUALITY_ALERTS)
    by_key = {d.dedup_key: d for d in decisions}
    (why,) = by_key["data_quality:record=a:temperature_c"].reasons
    assert why.startswith("temperature_c 42.0 is outside")


def test_without_record_ids_the_time_stands_in() -> None:
    """No record id: the observation time names the record (same-time records merge)."""
    result, _ = graded(QUALITY)
    keys = [d.dedup_key for d in decide_alerts(result) if d.kind == "data_quality"]
    assert keys == [
        "data_quality:t@10.0:oxygen.flow_l_min",
        "data_quality:t@10.0:temperature_c",
        "data_quality:t@12.0:oxygen.flow_l_min",
        "data_quality:t@12.0:temperature_c",
        "data_quality:t@14.0:oxygen.flow_l_min",
        "data_quality:t@16.0:death_attributable_to_crs",
    ]


QUIET = """
| t | temp | grade |
| 0 | 37.0 | 0     |
"""

STALE = """
| case                       | vitals       | as_of | after | days | gaps |
| exactly_8h_is_not_stale    | 0 8 16       |       |       |      |      |
| just_over_8h               | 0 8.5        |       |       |      | 0.0  |
| infusion_to_first          | 9            |       |       |      | 0.0  |
| between_measurements       | 0 4 13 20    |       |       |      | 4.0  |
| open_gap_up_to_now         | 0 4          | 12.5  |       |      | 4.0  |
| open_gap_exactly_8h        | 0 4          | 12    |       |      |      |
| no_now_only_closed_gaps    | 0 4          |       |       |      |      |
| now_before_last_vital      | 0 4 8        | 5     |       |      |      |
| no_vitals_at_all           |              | 30    |       |      | 0.0  |
| several_gaps               | 0 10 12 30   | 50    |       |      | 0.0 12.0 30.0 |
| custom_threshold           | 0 5          |       | 4     |      | 0.0  |
| window_cuts_the_gap        | 0 8 16 20 40 |       |       | 1    |      |
| stale_before_the_cut       | 0 8 15 40    |       |       | 1    | 15.0 |
| gap_after_window_ignored   | 0 8 16 24 40 |       |       | 1    |      |
| now_beyond_window          | 0 8 16 20    | 100   |       | 1    |      |
| pre_infusion_ignored       | -12 0 8      |       |       |      |      |
| unsorted_and_duplicated    | 8 0 8 16     |       |       |      |      |
"""


@cases(STALE)
def test_stale_monitoring(row: dict[str, str]) -> None:
    """Gaps strictly longer than N h (default 8) in days 0–14, keyed by gap start."""
    result, _ = graded(QUIET)
    options: dict[str, Any] = {
        "vital_times_h": [float(v) for v in row["vitals"].split()],
        "as_of_h": float(row["as_of"]) if row["as_of"] else None,
    }
    if row["after"]:
        options["stale_after_h"] = float(row["after"])
    if row["days"]:
        options["monitoring_days"] = float(row["days"])
    decisions = decide_alerts(result, **options)
    assert [d.dedup_key for d in decisions] == [
        f"stale_monitoring:gap@{g}" for g in row["gaps"].split()
    ]
    for d in decisions:
        assert (d.kind, d.severity, d.grade, d.push) == (
            "stale_monitoring",
            "warning",
            None,
            False,
        )
        assert d.t_hours == float(d.dedup_key.rsplit("@")[1])


def test_stale_monitoring_stops_at_day_14() -> None:
    """Default window 14 days (336 h): a gap is counted only up to 336 h."""
    result, _ = graded(QUIET)
    up_to_328 = [*range(0, 329, 8), 345]
    assert decide_alerts(result, vital_times_h=up_to_328) == ()
    up_to_320 = [*range(0, 321, 8), 345]
    (gap,) = decide_alerts(result, vital_times_h=up_to_320)
    assert gap.dedup_key == "stale_monitoring:gap@320.0"
    assert gap.reasons == (
        "no temperature or blood pressure recorded from 320.0 h until 336.0 h: "
        "16.0 h > 8 h, within the first 336.0 h after infusion",
    )


def test_open_gap_says_it_runs_up_to_now() -> None:
    """An open gap is explained up to now; its key is the same once it closes."""
    result, _ = graded(QUIET)
    (open_gap,) = decide_alerts(result, vital_times_h=[0, 4], as_of_h=20)
    (closed,) = decide_alerts(result, vital_times_h=[0, 4, 22], as_of_h=30)
    assert "up to 20.0 h (now)" in open_gap.reasons[0]
    assert "until 22.0 h" in closed.reasons[0]
    assert open_gap.dedup_key == closed.dedup_key == "stale_monitoring:gap@4.0"


MONITORED = """
| case                          | vitals | as_of | spans        | gaps | open  |
| no_spans_open_gap             | 0 4    | 13    |              | 4.0  | True  |
| discharge_before_gap_is_long  | 0 4    | 30    | 0-10         |      |       |
| gap_ends_at_discharge         | 0      | 30    | 0-20         | 0.0  | False |
| readmission_starts_own_gap    | 0 4    | 40    | 0-6 20-inf   | 20.0 | True  |
| short_stay_after_readmission  | 0 4    | 27    | 0-6 20-inf   |      |       |
| death_ends_monitoring         | 0      | 100   | 0-12         | 0.0  | False |
| gap_on_both_sides_of_a_break  | 0      | 40    | 0-10 20-inf  | 0.0 20.0 | False True |
| window_end_closes_open_gap    | 0      | 400   |              | 0.0  | False |
| span_before_infusion          | 4      | 10    | -24-inf      |      |       |
| transfer_does_not_reset_clock | 0 4 10 | 24    | 0-17 17-inf  | 10.0 | True  |
| overlapping_and_unsorted      | 0 4 10 | 24    | 12-inf 0-15  | 10.0 | True  |
| nested_span                   | 0      | 30    | 0-25 5-10    | 0.0  | False |
"""


def _spans(text: str) -> list[tuple[float, float]] | None:
    if not text:
        return None
    spans = []
    for part in text.split():
        start, end = re.fullmatch(r"(-?[\d.]+)-([\d.]+|inf)", part).groups()  # type: ignore[union-attr]
        spans.append((float(start), float(end)))
    return spans


@cases(MONITORED)
def test_stale_gaps_count_monitored_time_only(row: dict[str, str]) -> None:
    """Discharge and death end monitored time; a readmission starts its own gap."""
    gaps = stale_gaps(
        [float(v) for v in row["vitals"].split()],
        as_of_h=float(row["as_of"]),
        monitored_h=_spans(row["spans"]),
    )
    assert [g.dedup_key for g in gaps] == [
        f"stale_monitoring:gap@{g}" for g in row["gaps"].split()
    ]
    assert [str(g.open) for g in gaps] == row["open"].split()
    result, _ = graded(QUIET)
    decisions = decide_alerts(
        result,
        vital_times_h=[float(v) for v in row["vitals"].split()],
        as_of_h=float(row["as_of"]),
        monitored_h=_spans(row["spans"]),
    )
    assert [d.dedup_key for d in decisions] == [g.dedup_key for g in gaps]


def test_stale_gaps_refuse_bad_settings() -> None:
    """A zero threshold or a negative window cannot be meant."""
    with pytest.raises(ValueError, match="must be positive"):
        stale_gaps([0.0], as_of_h=10, stale_after_h=0)
    with pytest.raises(ValueError, match="monitoring_days >= 0"):
        stale_gaps([0.0], as_of_h=10, monitoring_days=-1)


def test_intake_flags_raise_data_quality_once_per_record_and_field() -> None:
    """Labs and pulse flagged at intake alert; graded vitals are left to the grader."""
    result, _ = graded(QUIET)
    flags = [
        RecordFlag("17", 30.0, "ferritin_ng_ml", "ferritin_ng_ml is extreme"),
        RecordFlag("17", 30.0, "ferritin_ng_ml", "second look"),
        RecordFlag("18", 31.0, "heart_rate_per_min", "heart_rate_per_min extreme"),
        RecordFlag("19", 32.0, "temperature_c", "judged by the grader with age"),
    ]
    decisions = decide_alerts(result, record_flags=flags)
    assert [(d.dedup_key, d.record_id, d.t_hours) for d in decisions] == [
        ("data_quality:record=17:ferritin_ng_ml", "17", 30.0),
        ("data_quality:record=18:heart_rate_per_min", "18", 31.0),
    ]
    assert decisions[0].reasons == ("ferritin_ng_ml is extreme", "second look")
    assert {(d.kind, d.severity, d.grade, d.push) for d in decisions} == {
        (AlertKind.DATA_QUALITY, Severity.INFO, None, False)
    }


def test_grader_and_intake_flags_on_one_field_are_one_alert() -> None:
    """The same record and field flagged twice gives one alert, the grader's."""
    result, records = graded(QUALITY)
    flag = RecordFlag("c", 14.0, "oxygen.flow_l_min", "intake flag")
    grader_only = decide_alerts(result, record_ids=records)
    both = decide_alerts(result, record_ids=records, record_flags=[flag])
    assert both == grader_only
    assert "intake flag" not in {why for d in both for why in d.reasons}


RISK = """
| t  | horizon | p    | threshold | model | alert |
| 10 | 24      | 0.2  | 0.3       | m1    |       |
| 12 | 24      | 0.5  | 0.3       | m1    | y     |
| 14 | 24      | 0.6  | 0.3       | m1    |       |
| 16 | 24      | 0.1  | 0.3       | m1    |       |
| 20 | 24      | 0.3  | 0.3       | m1    |       |
| 12 | 48      | 0.4  | 0.3       | m1    | y     |
| 12 | 24      | 0.9  | 0.5       | m2    | y     |
"""


def _signals(table: str) -> list[RiskSignal]:
    return [
        RiskSignal(
            t_hours=float(r["t"]),
            horizon_h=float(r["horizon"]),
            probability=float(r["p"]),
            threshold=float(r["threshold"]),
            model_version=r["model"],
            reasons=(f"signal at {r['t']} h",),
        )
        for r in parse_table(table)
    ]


def test_high_risk_once_per_episode_and_model() -> None:
    """One alert per model and horizon, at the first high prediction; a dip and a
    new rise (t 16, 20) is the same risk, not a second alert."""
    result, _ = graded(QUIET)
    signals = _signals(RISK)
    decisions = decide_alerts(result, risk_signals=signals)
    starts = [r for r in parse_table(RISK) if r["alert"] == "y"]
    assert sorted(d.dedup_key for d in decisions) == sorted(
        f"high_risk:model={r['model']}:horizon={float(r['horizon'])}" for r in starts
    )
    assert decide_alerts(result, risk_signals=signals[::-1]) == decisions
    first = decisions[0]
    assert (first.severity, first.push, first.grade) == ("critical", True, None)
    assert first.reasons[0].startswith("risk model m1: probability 0.5 >= threshold")
    assert first.reasons[1] == "signal at 12 h"


@pytest.mark.parametrize(
    ("probability", "threshold", "horizon"),
    [(1.5, 0.3, 24.0), (0.5, -0.1, 24.0), (0.5, 0.3, 0.0)],
)
def test_risk_signal_refuses_impossible_values(
    probability: float, threshold: float, horizon: float
) -> None:
    """A probability or threshold outside 0–1, or a horizon <= 0, is refused."""
    with pytest.raises(ValueError, match="must be"):
        RiskSignal(1.0, horizon, probability, threshold, "m1")


HISTORY = """
| t   | rec | temp | sbp | bolus | o2            | flow | spo2 | pressors       | grade |
| 2   | r1  | 37.3 | 84  | y     |               |      |      |                | 0     |
| 12  | r2  | 38.4 |     |       |               |      |      |                | 1     |
| 20  | r3  | 38.6 |     |       | nasal_cannula | 0    |      |                | 2     |
| 26  | r4  | 38.9 |     |       |               |      |      | norepinephrine | 3     |
| 30  | r5  | 37.0 |     |       |               |      |      |                | 0     |
| 40  | r6  | 37.0 |     |       |               |      | 85   |                | 0     |
| 60  | r7  | 37.0 |     |       |               |      |      |                | 0     |
| 70  | r8  | 37.0 |     |       |               |      | 85   |                | 0     |
| 100 | r9  | 39.0 | 120 |       | nasal_cannula | 2    |      |                | 2     |
| 110 | r10 | 37.0 | 84  | y     |               |      |      |                | 0     |
"""
HISTORY_ALERTS = """
| t   | kind                      | severity | grade | push | rec | key                                      |
| 2   | possible_masked_crs       | warning  | 0     | n    | r1  | possible_masked_crs:run@2.0              |
| 2   | stale_monitoring          | warning  |       | n    |     | stale_monitoring:gap@2.0                 |
| 12  | crs_onset                 | warning  | 1     | n    | r2  | crs_onset:course@12.0                    |
| 20  | crs_escalation            | warning  | 2     | n    | r3  | crs_escalation:course@12.0:grade=2       |
| 20  | data_quality              | info     | 2     | n    | r3  | data_quality:record=r3:oxygen.flow_l_min |
| 26  | crs_escalation            | critical | 3     | n    | r4  | crs_escalation:course@12.0:grade=3       |
| 26  | severe_crs                | critical | 3     | y    | r4  | severe_crs:course@12.0                   |
| 30  | stale_monitoring          | warning  |       | n    |     | stale_monitoring:gap@30.0                |
| 40  | hypoxemia_without_support | warning  | 0     | n    | r6  | hypoxemia_without_support:course@12.0    |
| 40  | stale_monitoring          | warning  |       | n    |     | stale_monitoring:gap@40.0                |
| 60  | stale_monitoring          | warning  |       | n    |     | stale_monitoring:gap@60.0                |
| 70  | hypoxemia_without_support | warning  | 0     | n    | r8  | hypoxemia_without_support:run@70.0       |
| 70  | stale_monitoring          | warning  |       | n    |     | stale_monitoring:gap@70.0                |
| 100 | crs_onset                 | warning  | 2     | n    | r9  | crs_onset:course@100.0                   |
| 100 | stale_monitoring          | warning  |       | n    |     | stale_monitoring:gap@100.0               |
| 110 | possible_masked_crs       | warning  | 0     | n    | r10 | possible_masked_crs:course@100.0         |
"""
PREMEDICATED = {0.0: "acetaminophen"}


def _history_alerts(
    table: str, *, reverse: bool = False, as_of: float | None = None
) -> tuple[AlertDecision, ...]:
    result, records = graded(table, PREMEDICATED, reverse=reverse)
    rows = parse_table(table)
    episode_times = [float(r["t"]) for r in rows if r["temp"] or r["sbp"]]
    return decide_alerts(
        result, record_ids=records, vital_times_h=episode_times, as_of_h=as_of
    )


def test_history_gives_each_alert_once_in_time_order() -> None:
    """A whole history: each condition once, in time order.

    Course 1 (12 h) resolves at 30 h, confirmed at 60 h, so hypoxemia at 40 h
    belongs to it and at 70 h to a run of its own; course 2 begins at 100 h,
    where the premedication of course 1 hides fever again (§5.5).
    """
    expect(_history_alerts(HISTORY), HISTORY_ALERTS)


def test_deciding_twice_gives_identical_decisions() -> None:
    """Idempotence: the same history, in any input order, gives the same alerts."""
    once = _history_alerts(HISTORY, as_of=130)
    assert _history_alerts(HISTORY, as_of=130) == once
    assert _history_alerts(HISTORY, reverse=True, as_of=130) == once


def test_keys_are_stable_as_history_grows() -> None:
    """Adding later observations never changes an earlier alert, so dedup holds."""
    rows = HISTORY.strip().splitlines()
    full = {d.dedup_key: d for d in _history_alerts(HISTORY)}
    for n in range(2, len(rows) + 1):
        prefix = "\n".join(rows[:n])
        last = float(parse_table(prefix)[-1]["t"])
        for d in _history_alerts(prefix, as_of=last):
            assert d.dedup_key in full, (n, d.dedup_key)
            kept = full[d.dedup_key]
            assert (d.kind, d.t_hours, d.grade, d.record_id) == (
                kept.kind,
                kept.t_hours,
                kept.grade,
                kept.record_id,
            )
            if d.kind != AlertKind.STALE_MONITORING:
                assert d == kept


KEY = re.compile(
    r"(crs_onset|severe_crs|crs_death):course@-?[\d.]+"
    r"|crs_escalation:course@-?[\d.]+:grade=[1-5]"
    r"|(possible_masked_crs|hypoxemia_without_support):(course|run)@-?[\d.]+"
    r"|data_quality:(record=[^:]+|t@-?[\d.]+):[a-z_.2]+"
    r"|stale_monitoring:gap@[\d.]+"
    r"|high_risk:model=.+:horizon=[\d.]+"
)


def test_keys_are_built_only_from_the_documented_parts() -> None:
    """Keys hold times, grades, fields and record ids: never a patient identifier."""
    decisions = _history_alerts(HISTORY, as_of=130) + alerts(QUALITY) + alerts(DEATH)
    for d in decisions:
        assert KEY.fullmatch(d.dedup_key), d.dedup_key


def test_push_is_severe_death_and_high_risk_only() -> None:
    """Webhook-worthy: severe CRS, a CRS death and a high risk; nothing else."""
    pushed = {
        kind
        for kind in AlertKind
        if AlertDecision(kind, Severity.CRITICAL, "k", 0.0, 3, "astct-2019", ()).push
    }
    assert pushed == {"severe_crs", "crs_death", "high_risk"}


def test_vital_sign_times() -> None:
    """Temperature (°C or raw) and any blood pressure count; SpO2 alone does not."""
    rows = parse_table("""
    | t  | temp | temp_f | sbp | spo2 |
    | 9  |      |        | 100 |      |
    | 3  | 37.0 |        |     |      |
    | 5  |      |        |     | 95   |
    | 7  |      | 99.1   |     |      |
    """)
    observations = [replace(build_assessment(r), t_hours=float(r["t"])) for r in rows]
    untimed = build_assessment({"temp": "37.0"})
    episode = Episode(age_years=34.0, observations=(*observations, untimed))
    assert vital_sign_times(episode) == (3.0, 7.0, 9.0)


@pytest.mark.parametrize(
    "options", [{"stale_after_h": 0.0}, {"monitoring_days": -1.0}], ids=str
)
def test_stale_settings_are_checked(options: dict[str, Any]) -> None:
    """A stale threshold must be positive and the window not negative."""
    result, _ = graded(QUIET)
    with pytest.raises(ValueError, match="stale_after_h"):
        decide_alerts(result, **options)


def test_a_carried_value_raises_its_data_quality_alert_once() -> None:
    """A flagged value seen by several snapshots is one alert, keyed by its record."""
    table = """
| t  | temp | grade |
| 10 | 42.0 | 1     |
| 14 | 42.0 | 1     |
"""
    result, _ = graded(table)
    sources = {0: {"temperature_c": "rec-7"}, 1: {"temperature_c": "rec-7"}}
    quality = [
        d
        for d in decide_alerts(result, field_sources=sources)
        if d.kind is AlertKind.DATA_QUALITY
    ]
    assert [(d.dedup_key, d.record_id) for d in quality] == [
        ("data_quality:record=rec-7:temperature_c", "rec-7")
    ]
