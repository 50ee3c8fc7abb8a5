"""Property tests for the readers at the edge: feed records and JSON lines.

Whatever text arrives, :func:`crsmon.intake.parse.parse_record` answers with a
validated record or a :class:`~crsmon.intake.parse.Refused`, and the strict
JSON-lines reader (:func:`crsmon.schemas.jsonl.read_object`, also behind the
grade CLI's :func:`crsmon.gradelines.grade_line`) with an object or a problem;
neither ever raises. What is accepted is finite, inside the §4.4 plausibility
limits and inside the time window; what is refused is explained without the
value that was sent (reliability.md §3.4, T8/T10).

Inputs: arbitrary text, JSON-ish text built from a small grammar (with the
tokens Python's ``json`` accepts and JSON does not: ``NaN``, ``Infinity``,
huge integers, repeated keys, deep nesting) and valid records of every kind
mutated one step (a field replaced by any JSON value or by a distinctive
marker, dropped, added, repeated, or the text cut or spliced).
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, date, datetime, timedelta
from typing import Any
from unicodedata import category

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from crsmon.domain.catalog import resolve_rule_set
from crsmon.domain.plausibility import LIMITS
from crsmon.gradelines import grade_line
from crsmon.intake.parse import Refused, parse_record
from crsmon.intake.schemas import (
    EARLIEST_TIME,
    FUTURE_TOLERANCE,
    KEY_PATTERN,
    SYSTEM_PATTERN,
    LabIn,
    OxygenIn,
    PatientIn,
    VitalsIn,
)
from crsmon.schemas.jsonl import read_object

NOW = datetime(2026, 3, 2, 12, tzinfo=UTC)
RULES = resolve_rule_set("astct-2019")

PROPERTY = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
"""Enough examples to find the classes of bad input; the file runs in seconds."""

# ---------------------------------------------------------------- valid records

ENVELOPE = {"source_system": "monitor-7", "patient": "P-0001"}
T = "2026-03-01T10:00:00+00:00"

VALID: list[dict[str, Any]] = [
    {
        "kind": "patient",
        "source_system": "ehr",
        "source_record_id": "enrol-1",
        "patient": "P-0001",
        "birth_date": "2017-05-01",
        "weight_kg": 24.5,
        "care_unit": "PICU",
        "disease_status": "hematologic",
        "marrow_blast_pct": 42.0,
        "ldh_u_l": 310,
        "product": {"name": "CAR T", "dose_cells_per_kg": 3.1e6, "viability_pct": 91},
        "infusion_at": "2026-02-27T10:00:00+00:00",
    },
    {
        "kind": "vitals",
        "observed_at": T,
        "temperature_c": 39.1,
        "dbp_mmhg": 44,
        "sbp_mmhg": 80,
        "map_mmhg": 56,
        "heart_rate_per_min": 148,
        "respiratory_rate_per_min": 30,
        "spo2_pct": 95,
    },
    {
        "kind": "vitals",
        "observed_at": "2026-03-01T11:00:00+01:00",
        "temperature_raw": {"value": 102.4, "unit": "[degF]"},
        "supersedes": "v-1",
        "correction_reason": "typed\nwrong",
    },
    {
        "kind": "oxygen",
        "observed_at": T,
        "device": "nasal_cannula",
        "flow_l_min": 2,
        "fio2": 0.3,
    },
    {
        "kind": "vasopressor_start",
        "started_at": T,
        "drug": "norepinephrine",
        "dose": 0.05,
        "unit": "ug/kg/min",
    },
    {"kind": "vasopressor_stop", "stopped_at": T, "start_record_id": "ne-01"},
    {"kind": "fluid_bolus", "given_at": T, "for_hypotension": True, "volume_ml": 490},
    {
        "kind": "lab",
        "observed_at": T,
        "analyte": "creatinine",
        "value": 88.4,
        "unit": "umol/L",
        "loinc": "14682-9",
    },
    {"kind": "treatment", "given_at": T, "drug": "tocilizumab"},
    {
        "kind": "attribution",
        "finding": "fever",
        "start_at": T,
        "end_at": None,
        "by": "dr-3",
        "reason": "line infection",
    },
    {
        "kind": "outcome",
        "at": T,
        "event": "death",
        "death_attributable_to_crs": False,
        "note": "n",
    },
    {"kind": "transfer", "transferred_at": T, "care_unit": "WARD"},
    {"kind": "discharge", "discharged_at": T, "destination": "home"},
    {"kind": "retraction", "at": T, "target_record_id": "r-0", "reason": "wrong bed"},
]
for n, fields in enumerate(VALID):
    if fields["kind"] != "patient":
        VALID[n] = {**ENVELOPE, "source_record_id": f"r-{n}", **fields}


def test_the_seed_records_are_valid() -> None:
    """Every seed record is accepted, so a mutation is what makes it bad."""
    for fields in VALID:
        assert not isinstance(parse_record(json.dumps(fields), NOW), Refused), fields


# ---------------------------------------------------------------- strategies

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats()  # NaN and infinities included: json.dumps writes NaN, Infinity
    | st.text(max_size=12)
    | st.sampled_from(["", "\x00", "\ud800", "1e400", "38.5", T, "2026-03-01T10:00:00"])
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)

MARKER_TEXT = st.integers(100_000, 999_999).map(lambda n: f"zq{n}qz")
MARKER_NUMBER = st.integers(100_000, 999_999).map(lambda n: n + 0.318309)
"""Distinctive values: a refusal that repeated one would show it verbatim."""

RAW_TOKENS = st.sampled_from(
    [
        "NaN",
        "Infinity",
        "-Infinity",
        "1e400",
        "-1e400",
        "1" + "0" * 5000,
        "true",
        "null",
        "[]",
        "{}",
        '"\\u0000"',
        '"\\ud800"',
        "[" * 3000 + "]" * 3000,
    ]
)
"""JSON-ish tokens written as raw text (``json.dumps`` would not write them)."""


@st.composite
def json_ish_text(draw: st.DrawFn) -> str:
    """Text that is JSON, almost JSON, or JSON with Python's extensions."""
    text = json.dumps(draw(JSON_VALUES))
    if draw(st.booleans()):
        token = draw(RAW_TOKENS)
        at = draw(st.integers(0, len(text)))
        text = text[:at] + token + text[at:]
    if draw(st.booleans()):
        cut = draw(st.integers(0, len(text)))
        text = text[:cut] if draw(st.booleans()) else text[cut:]
    return text


def with_member(record: dict[str, Any], key: str, raw: str) -> str:
    """``record`` as JSON text with one more member ``key`` of raw JSON ``raw``
    (a key it already has is then sent twice)."""
    text = json.dumps(record)
    return f"{text[:-1]}, {json.dumps(key)}: {raw}}}"


@st.composite
def mutated_record(draw: st.DrawFn) -> tuple[str, str | None]:
    """A valid record changed one step, and the marker planted in it (if any)."""
    record = dict(draw(st.sampled_from(VALID)))
    keys = sorted(record)
    key = draw(st.sampled_from(keys))
    how = draw(
        st.sampled_from(
            ["marker", "value", "raw", "drop", "unknown", "repeat", "nested", "text"]
        )
    )
    if how == "marker":
        marker: str | float = draw(MARKER_TEXT | MARKER_NUMBER)
        record[key] = marker
        return json.dumps(record), str(marker)
    if how == "value":
        record[key] = draw(JSON_VALUES)
        return json.dumps(record), None
    if how == "raw":
        del record[key]
        return with_member(record, key, draw(RAW_TOKENS)), None
    if how == "drop":
        del record[key]
        return json.dumps(record), None
    if how == "unknown":
        marker = draw(MARKER_TEXT)
        name = draw(st.text(min_size=1, max_size=20) | st.just("bed_note"))
        if name in record:
            return json.dumps(record), None
        return with_member(record, name, json.dumps(marker)), marker
    if how == "repeat":
        marker = draw(MARKER_TEXT | MARKER_NUMBER.map(str))
        return with_member(record, key, json.dumps(marker)), str(marker)
    if how == "nested":
        nested = [k for k in keys if isinstance(record[k], dict)]
        if not nested:
            return json.dumps(record), None
        outer = draw(st.sampled_from(nested))
        marker = draw(MARKER_NUMBER)
        inner = dict(record[outer])
        inner[draw(st.sampled_from(sorted(inner)))] = marker
        record[outer] = inner
        return json.dumps(record), str(marker)
    text = json.dumps(record)
    at = draw(st.integers(0, len(text)))
    splice = draw(st.text(max_size=6) | RAW_TOKENS)
    return text[:at] + splice + text[at + draw(st.integers(0, 3)) :], None


# ---------------------------------------------------------------- checks


def _walk(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in _walk(item)]
    if isinstance(value, list | tuple):
        return [leaf for item in value for leaf in _walk(item)]
    return [value]


def assert_accepted_values_are_sound(record: Any) -> None:
    """Finite numbers, times in the window, no control characters but line
    breaks in free text, and every measured value inside its reject bounds."""
    for leaf in _walk(record.model_dump()):
        if isinstance(leaf, float):
            assert math.isfinite(leaf)
        elif isinstance(leaf, datetime):
            assert leaf.tzinfo is not None
            assert EARLIEST_TIME <= leaf <= NOW + FUTURE_TOLERANCE
        elif isinstance(leaf, str):
            assert "\x00" not in leaf
            assert all(c in "\t\n\r" or category(c) != "Cc" for c in leaf), leaf
    if isinstance(record, PatientIn):
        row = record.patient_row()
        for name in ("weight_kg", "ldh_u_l"):
            value = getattr(row, name)
            assert value is None or not LIMITS[name].rejects(value)
        if row.birth_date is not None:
            assert row.birth_date <= row.infusion_at.date()
            assert row.infusion_at.date() - row.birth_date <= timedelta(days=44_000)
        return
    for row in record.rows():
        if row.value is not None and row.quantity is not None:
            assert math.isfinite(row.value)
            assert not LIMITS[row.quantity].rejects(row.value), row
        assert len(row.key) <= 128
    if isinstance(record, VitalsIn | LabIn | OxygenIn):
        assert record.rows()


def assert_refusal_is_clean(refused: Refused, marker: str | None) -> None:
    """A reason with a field path, no submitted value, and a well-formed key."""
    assert refused.error
    assert ": " in refused.error
    if marker is not None:
        assert marker not in refused.error
    if refused.source_system is not None:
        assert _matches(SYSTEM_PATTERN, refused.source_system)
    if refused.source_record_id is not None:
        assert _matches(KEY_PATTERN, refused.source_record_id)


def _matches(pattern: str, value: str) -> bool:
    return re.fullmatch(pattern, value) is not None


def check_parse(text: str, marker: str | None = None) -> None:
    result = parse_record(text, NOW)
    if isinstance(result, Refused):
        assert_refusal_is_clean(result, marker)
    else:
        assert_accepted_values_are_sound(result)


# ---------------------------------------------------------------- properties


@PROPERTY
@given(st.text(max_size=200))
@example("")
@example("\x00")
@example("[" * 100_000)
def test_any_text_is_a_record_or_a_refusal(text: str) -> None:
    """Arbitrary text never raises: it is read, or refused with a reason."""
    check_parse(text)


@PROPERTY
@given(json_ish_text())
@example('{"kind": "vitals", "temperature_c": 1' + "0" * 5000 + "}")
@example('{"kind": "vitals", "\\u0000": 1, "\\u0000": 2}')
@example('{"a": ' * 5000 + "1" + "}" * 5000)
def test_json_ish_text_is_a_record_or_a_refusal(text: str) -> None:
    """NaN, infinity, huge numbers, repeated keys and deep nesting included."""
    check_parse(text)


@PROPERTY
@given(mutated_record())
@example(
    (
        json.dumps(VALID[1] | {"observed_at": "0001-01-01T00:00:00+05:00"}),
        "0001-01-01",
    )
)
@example((json.dumps(VALID[11] | {"care_unit": "W\x00zq123456qz"}), "zq123456qz"))
@example((json.dumps(VALID[1] | {"source_record_id": "k" * 120}), None))
@example((json.dumps(VALID[0] | {"birth_date": "1800-01-01"}), "1800-01-01"))
def test_a_mutated_record_is_sound_or_refused_without_its_value(
    case: tuple[str, str | None],
) -> None:
    """One step away from a valid record: accepted values are finite and in
    bounds; a refusal never repeats the planted value."""
    text, marker = case
    check_parse(text, marker)


@PROPERTY
@given(json_ish_text() | st.text(max_size=100))
def test_the_jsonl_reader_reads_an_object_or_names_one_problem(text: str) -> None:
    """``read_object`` never raises; a clean object has only finite numbers."""
    obj, problem = read_object(text)
    if problem is None:
        assert isinstance(obj, dict)
        for leaf in _walk(obj):
            assert not isinstance(leaf, float) or math.isfinite(leaf)
    else:
        assert problem.split(": ", 1)[0]  # a path, or "$"


FINITE_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**18), 10**18)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@PROPERTY
@given(st.dictionaries(st.text(max_size=8), FINITE_JSON, max_size=6))
def test_the_jsonl_reader_round_trips_any_finite_object(obj: dict[str, Any]) -> None:
    """Strict reading takes back every object ``json.dumps`` writes."""
    assert read_object(json.dumps(obj)) == (obj, None)


@PROPERTY
@given(st.integers(100_000, 999_999), st.sampled_from(["NaN", "1e400", "dup"]))
def test_the_jsonl_reader_never_repeats_a_value(n: int, how: str) -> None:
    """A non-finite number or a repeated key is named by path, not by value."""
    marker = f"zq{n}qz"
    if how == "dup":
        text = f'{{"a": {{"b": "{marker}", "b": "{marker}x"}}}}'
    else:
        text = f'{{"a": "{marker}", "x": [{n}.5, {how}]}}'
    obj, problem = read_object(text)
    assert obj is not None
    assert problem is not None
    assert problem.startswith("a.b: " if how == "dup" else "x[1]: ")
    assert marker not in problem
    assert str(n) not in problem


@PROPERTY
@given(json_ish_text() | mutated_record().map(lambda case: case[0]))
def test_the_grade_cli_answers_every_line(text: str) -> None:
    """``grade_line`` (``crsmon grade``'s JSON-lines path) never raises."""
    reply = grade_line(text, 1, RULES)
    assert isinstance(reply, dict)
    if "error" in reply:
        assert reply["error"]


def test_a_birth_date_is_checked_against_the_infusion() -> None:
    """The age a birth date gives must be a possible one, as for ``age_years``."""
    base = VALID[0]
    born = date(2026, 2, 28).isoformat()
    refused = parse_record(json.dumps(base | {"birth_date": born}), NOW)
    assert isinstance(refused, Refused)
    assert refused.error.startswith("birth_date: must give an age at infusion_at")
