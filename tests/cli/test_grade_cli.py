"""CLI contract of ``crsmon grade``: JSON Lines in, one reply per line, strict intake.

Every test runs the installed ``crsmon`` console script in a subprocess, so the
contract is checked end to end: argument parsing, reading, validation, grading,
output shape and exit status. Input fields follow grading.md §0.1/§0.2 and the
reject and flag columns of §4.4.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.cli

_SIBLING = Path(sys.executable).parent / "crsmon"
CRSMON = str(_SIBLING) if _SIBLING.exists() else shutil.which("crsmon") or "crsmon"

GRADED_KEYS = {"id", "astct_grade", "reasons", "missing_inputs", "flags", "rule_set"}
EPISODE_KEYS = {
    "per_observation_astct_grades",
    "onset_t_hours",
    "max_grade_t_hours",
    "resolution_t_hours",
    "duration_hours",
    "observations",
}
ERROR_KEYS = {"id", "line", "error"}
DISCLAIMER = "not a medical device"


def run_crsmon(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """Run the installed ``crsmon`` with ``args``, feeding ``stdin``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"}
    }
    env["NO_COLOR"] = "1"
    return subprocess.run(
        [CRSMON, *args],
        input=stdin,
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env,
        check=False,
        timeout=120,
    )


def records(proc: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    """Parse the JSON Lines a run wrote to standard output."""
    return [json.loads(line) for line in proc.stdout.splitlines()]


def jline(**fields: Any) -> str:
    """One assessment line: an adult with id ``x`` plus ``fields``."""
    return json.dumps({"id": "x", "age_years": 30, **fields})


def eline(*observations: dict[str, Any], line_id: str = "x", **episode: Any) -> str:
    """One episode line for a 5-year-old with the given observations."""
    body = {"age_years": 5, **episode, "observations": list(observations)}
    return json.dumps({"id": line_id, "episode": body})


def grade_one_bad_line(line: str) -> dict[str, Any]:
    """Grade a single line expected to be refused; return its error record."""
    proc = run_crsmon("grade", stdin=line + "\n")
    assert "Traceback" not in proc.stderr
    out = records(proc)
    assert len(out) == 1, proc.stdout
    assert set(out[0]) == ERROR_KEYS, out[0]
    assert out[0]["line"] == 1
    assert proc.returncode == 1
    return out[0]


def grade_one_good_line(line: str, *args: str) -> dict[str, Any]:
    """Grade a single line expected to be accepted; return its graded record."""
    proc = run_crsmon("grade", *args, stdin=line + "\n")
    out = records(proc)
    assert len(out) == 1, proc.stdout
    assert "error" not in out[0], out[0]
    assert proc.returncode == 0
    return out[0]


def assert_names_path(error: str, path: str) -> None:
    """Assert ``error`` reads ``<path>: <reason>`` with a non-empty reason."""
    assert error.startswith(f"{path}: "), f"expected path {path!r} in {error!r}"
    assert error[len(path) + 2 :].strip(), error


def table_rows(text: str) -> list[list[str]]:
    """The cells of each body line of a rich table, stripped."""
    return [
        [cell.strip() for cell in line.split("│")[1:-1]]
        for line in text.splitlines()
        if line.startswith("│")
    ]


# (case, input line, field path the error must name, submitted text it must not echo)
SCHEMA_ERRORS = [
    ("not JSON", '{"age_years": 30, "temperature_c": thirty-eight}', "$", "thirty"),
    ("truncated JSON", '{"id": "x", "age_years": 30', "$", None),
    ("JSON array line", '[{"age_years": 30}]', "$", None),
    ("JSON number line", "42", "$", None),
    ("JSON string line", '"age_years"', "$", None),
    ("JSON null line", "null", "$", None),
    ("JSON true line", "true", "$", None),
    (
        "NaN",
        '{"id": "x", "age_years": 30, "temperature_c": NaN}',
        "temperature_c",
        None,
    ),
    (
        "Infinity",
        '{"id": "x", "age_years": 30, "temperature_c": Infinity}',
        "temperature_c",
        None,
    ),
    (
        "-Infinity",
        '{"id": "x", "age_years": 30, "spo2_pct": -Infinity}',
        "spo2_pct",
        None,
    ),
    (
        "1e999",
        '{"id": "x", "age_years": 30, "temperature_c": 1e999}',
        "temperature_c",
        None,
    ),
    (
        "duplicate key",
        '{"id": "x", "age_years": 30, "age_years": 31}',
        "age_years",
        None,
    ),
    (
        "duplicate nested key",
        '{"id": "x", "age_years": 30, "oxygen": {"device": "cpap", "device": "bipap"}}',
        "oxygen.device",
        None,
    ),
    ("unknown top-level field", jline(temp_c=38.5), "temp_c", None),
    (
        "unknown field in oxygen",
        jline(oxygen={"device": "nasal_cannula", "flow": 2}),
        "oxygen.flow",
        None,
    ),
    (
        "unknown field in a vasopressor",
        jline(
            vasopressors=[
                {"drug": "norepinephrine", "dose": 5, "unit": "ug/min", "rate": 1}
            ]
        ),
        "vasopressors[0].rate",
        None,
    ),
    (
        "unknown field in an episode",
        eline({"t_hours": 1}, ward="picu"),
        "episode.ward",
        None,
    ),
    (
        "unknown field in an episode observation",
        eline({"t_hours": 1}, {"t_hours": 2, "pulse": 120}),
        "episode.observations[1].pulse",
        None,
    ),
    (
        "missing age_years",
        json.dumps({"id": "x", "temperature_c": 38.5}),
        "age_years",
        None,
    ),
    ("missing oxygen.device", jline(oxygen={"flow_l_min": 2}), "oxygen.device", None),
    (
        "missing episode observations",
        json.dumps({"id": "x", "episode": {"age_years": 5}}),
        "episode.observations",
        None,
    ),
    (
        "episode observation without t_hours",
        eline({"t_hours": 1}, {"temperature_c": 38.5}),
        "episode.observations[1].t_hours",
        None,
    ),
    (
        "episode observation carrying crs_established",
        eline({"t_hours": 1, "crs_established": True}),
        "episode.observations[0].crs_established",
        None,
    ),
    (
        "episode observation carrying antipyretic_or_anticytokine_given",
        eline(
            {"t_hours": 1}, {"t_hours": 2, "antipyretic_or_anticytokine_given": True}
        ),
        "episode.observations[1].antipyretic_or_anticytokine_given",
        None,
    ),
    (
        "string for number",
        jline(temperature_c="thirty-eight"),
        "temperature_c",
        "thirty-eight",
    ),
    ("numeric string for number", jline(sbp_mmhg="85"), "sbp_mmhg", None),
    ("string for age", json.dumps({"id": "x", "age_years": "30"}), "age_years", None),
    ("boolean for number", jline(temperature_c=True), "temperature_c", None),
    (
        "string for nested number",
        jline(
            vasopressors=[{"drug": "norepinephrine", "dose": "lots", "unit": "ug/min"}]
        ),
        "vasopressors[0].dose",
        "lots",
    ),
    (
        "string for number in an episode observation",
        eline({"t_hours": 1}, {"t_hours": 2, "temperature_c": "feverish"}),
        "episode.observations[1].temperature_c",
        "feverish",
    ),
    ("int 1 for boolean", jline(death=1), "death", None),
    (
        "int 0 for boolean",
        jline(fever_attributable_to_other_cause=0),
        "fever_attributable_to_other_cause",
        None,
    ),
    (
        "object for list",
        jline(vasopressors={"drug": "norepinephrine", "dose": 5, "unit": "ug/min"}),
        "vasopressors",
        None,
    ),
    ("list for object", jline(oxygen=["nasal_cannula"]), "oxygen", None),
    ("string for object", jline(oxygen="nasal_cannula"), "oxygen", None),
    ("number for episode", json.dumps({"id": "x", "episode": 5}), "episode", None),
    (
        "oxygen device not in vocabulary",
        jline(oxygen={"device": "helmet_interface"}),
        "oxygen.device",
        "helmet_interface",
    ),
    (
        "vasopressor drug not in vocabulary",
        jline(vasopressors=[{"drug": "adrenaline", "dose": 5, "unit": "ug/min"}]),
        "vasopressors[0].drug",
        "adrenaline",
    ),
    (
        "vasopressor unit not in vocabulary",
        jline(vasopressors=[{"drug": "norepinephrine", "dose": 5, "unit": "mcg/hr"}]),
        "vasopressors[0].unit",
        "mcg/hr",
    ),
    (
        "temperature unit not in vocabulary",
        jline(temperature_raw={"value": 100.4, "unit": "fahrenheit"}),
        "temperature_raw.unit",
        "fahrenheit",
    ),
    (
        "treatment drug not in vocabulary",
        eline({"t_hours": 1}, treatments=[{"t_hours": 0, "drug": "aspirin_x"}]),
        "episode.treatments[0].drug",
        "aspirin_x",
    ),
    (
        "death_attributable_to_crs without death",
        jline(death_attributable_to_crs=True),
        "death_attributable_to_crs",
        None,
    ),
    (
        "death_attributable_to_crs with death false",
        jline(death=False, death_attributable_to_crs=False),
        "death_attributable_to_crs",
        None,
    ),
    (
        "death_attributable_to_crs without death in an episode observation",
        eline({"t_hours": 1, "death_attributable_to_crs": True}),
        "episode.observations[0].death_attributable_to_crs",
        None,
    ),
]


@pytest.mark.parametrize(
    ("line", "path", "secret"),
    [
        pytest.param(line, path, secret, id=case)
        for case, line, path, secret in SCHEMA_ERRORS
    ],
)
def test_bad_line_is_an_error_naming_the_field(
    line: str, path: str, secret: str | None
) -> None:
    """A malformed, unknown, mistyped or inconsistent line is refused at its field."""
    error = grade_one_bad_line(line)["error"]
    assert_names_path(error, path)
    if secret is not None:
        assert secret not in error


# (case, fields added to an adult assessment, field path the error must name)
REJECT_COLUMN = [
    ("temperature_c below 25", {"temperature_c": 24.9}, "temperature_c"),
    ("temperature_c above 45", {"temperature_c": 45.1}, "temperature_c"),
    ("sbp_mmhg zero", {"sbp_mmhg": 0}, "sbp_mmhg"),
    ("sbp_mmhg negative", {"sbp_mmhg": -10}, "sbp_mmhg"),
    ("sbp_mmhg above 300", {"sbp_mmhg": 300.5}, "sbp_mmhg"),
    ("sbp_mmhg equal to dbp", {"sbp_mmhg": 80, "dbp_mmhg": 80}, "sbp_mmhg"),
    ("sbp_mmhg below dbp", {"sbp_mmhg": 60, "dbp_mmhg": 90}, "sbp_mmhg"),
    ("dbp_mmhg negative", {"dbp_mmhg": -0.5}, "dbp_mmhg"),
    ("dbp_mmhg above 250", {"dbp_mmhg": 250.5}, "dbp_mmhg"),
    ("map_mmhg zero", {"map_mmhg": 0}, "map_mmhg"),
    ("map_mmhg negative", {"map_mmhg": -1}, "map_mmhg"),
    ("map_mmhg above 250", {"map_mmhg": 250.5}, "map_mmhg"),
    ("spo2_pct negative", {"spo2_pct": -0.5}, "spo2_pct"),
    ("spo2_pct above 100", {"spo2_pct": 100.5}, "spo2_pct"),
    (
        "fio2 below 0.21",
        {"oxygen": {"device": "venturi_mask", "fio2": 0.2}},
        "oxygen.fio2",
    ),
    (
        "fio2 above 1.0",
        {"oxygen": {"device": "venturi_mask", "fio2": 1.01}},
        "oxygen.fio2",
    ),
    (
        "fio2 sent as a percentage",
        {"oxygen": {"device": "venturi_mask", "fio2": 40}},
        "oxygen.fio2",
    ),
    (
        "flow_l_min negative",
        {"oxygen": {"device": "nasal_cannula", "flow_l_min": -0.5}},
        "oxygen.flow_l_min",
    ),
    (
        "flow_l_min above 80",
        {"oxygen": {"device": "high_flow_nasal_cannula", "flow_l_min": 80.5}},
        "oxygen.flow_l_min",
    ),
    ("age_years negative", {"age_years": -0.1}, "age_years"),
    ("age_years above 120", {"age_years": 120.5}, "age_years"),
    ("weight_kg equal to 0.3", {"weight_kg": 0.3}, "weight_kg"),
    ("weight_kg below 0.3", {"weight_kg": 0.1}, "weight_kg"),
    ("weight_kg above 400", {"weight_kg": 400.5}, "weight_kg"),
    (
        "temperature_raw [degF] converting below 25 C",
        {"temperature_raw": {"value": 76.0, "unit": "[degF]"}},
        "temperature_raw.value",
    ),
    (
        "temperature_raw [degF] converting above 45 C",
        {"temperature_raw": {"value": 113.5, "unit": "[degF]"}},
        "temperature_raw.value",
    ),
    (
        "temperature_raw Cel above 45",
        {"temperature_raw": {"value": 45.5, "unit": "Cel"}},
        "temperature_raw.value",
    ),
]


@pytest.mark.parametrize(
    ("fields", "path"),
    [pytest.param(fields, path, id=case) for case, fields, path in REJECT_COLUMN],
)
def test_reject_column_value_is_an_error(fields: dict[str, Any], path: str) -> None:
    """A value in the §4.4 reject column is refused and not graded."""
    record = grade_one_bad_line(jline(**fields))
    assert_names_path(record["error"], path)
    assert record["id"] == "x"


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        pytest.param(
            {"sbp_mmhg": 60, "dbp_mmhg": 60},
            "episode.observations[0].sbp_mmhg",
            id="sbp equal to dbp",
        ),
        pytest.param(
            {"temperature_c": 45.5},
            "episode.observations[0].temperature_c",
            id="temperature_c above 45",
        ),
        pytest.param(
            {"oxygen": {"device": "nasal_cannula", "flow_l_min": 90}},
            "episode.observations[0].oxygen.flow_l_min",
            id="flow above 80",
        ),
        pytest.param(
            {"temperature_raw": {"value": 120.0, "unit": "[degF]"}},
            "episode.observations[0].temperature_raw.value",
            id="temperature_raw [degF] converting above 45 C",
        ),
    ],
)
def test_reject_column_value_in_episode_observation_is_an_error(
    fields: dict[str, Any], path: str
) -> None:
    """A §4.4 reject inside an episode names the observation's full field path."""
    record = grade_one_bad_line(eline({"t_hours": 1, **fields}))
    assert_names_path(record["error"], path)


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"temperature_c": 25.0}, id="temperature_c 25"),
        pytest.param({"temperature_c": 45.0}, id="temperature_c 45"),
        pytest.param({"sbp_mmhg": 300}, id="sbp_mmhg 300"),
        pytest.param({"sbp_mmhg": 0.5}, id="sbp_mmhg 0.5"),
        pytest.param({"sbp_mmhg": 251, "dbp_mmhg": 250}, id="dbp_mmhg 250"),
        pytest.param({"dbp_mmhg": 0}, id="dbp_mmhg 0"),
        pytest.param({"map_mmhg": 250}, id="map_mmhg 250"),
        pytest.param({"spo2_pct": 0}, id="spo2_pct 0"),
        pytest.param({"spo2_pct": 100}, id="spo2_pct 100"),
        pytest.param({"oxygen": {"device": "cpap", "fio2": 0.21}}, id="fio2 0.21"),
        pytest.param({"oxygen": {"device": "cpap", "fio2": 1.0}}, id="fio2 1.0"),
        pytest.param(
            {"oxygen": {"device": "nasal_cannula", "flow_l_min": 0}}, id="flow 0"
        ),
        pytest.param(
            {"oxygen": {"device": "high_flow_nasal_cannula", "flow_l_min": 80}},
            id="flow 80",
        ),
        pytest.param({"age_years": 0}, id="age_years 0"),
        pytest.param({"age_years": 120}, id="age_years 120"),
        pytest.param({"weight_kg": 0.31}, id="weight_kg 0.31"),
        pytest.param({"weight_kg": 400}, id="weight_kg 400"),
        pytest.param(
            {"temperature_raw": {"value": 113.0, "unit": "[degF]"}},
            id="temperature_raw 113 [degF] is 45 C",
        ),
    ],
)
def test_value_on_reject_boundary_is_graded(fields: dict[str, Any]) -> None:
    """A value exactly on a §4.4 reject limit is inside the accepted range."""
    record = grade_one_good_line(jline(**fields))
    assert set(record) >= GRADED_KEYS


@pytest.mark.parametrize(
    ("fields", "field", "grade"),
    [
        pytest.param({"temperature_c": 42.0}, "temperature_c", 1, id="temperature 42"),
        pytest.param(
            {"temperature_c": 33.5}, "temperature_c", 0, id="temperature 33.5"
        ),
        pytest.param({"sbp_mmhg": 260}, "sbp_mmhg", 0, id="sbp 260"),
        pytest.param({"map_mmhg": 190}, "map_mmhg", 0, id="map 190"),
        pytest.param({"spo2_pct": 65}, "spo2_pct", 0, id="spo2 65"),
        pytest.param(
            {"oxygen": {"device": "nasal_cannula", "flow_l_min": 20}},
            "oxygen.flow_l_min",
            None,
            id="nasal cannula 20 L/min",
        ),
    ],
)
def test_flag_column_value_is_graded_with_a_data_quality_flag(
    fields: dict[str, Any], field: str, grade: int | None
) -> None:
    """A §4.4 flag-column value is graded, not refused, and carries a flag."""
    record = grade_one_good_line(jline(**fields))
    if grade is not None:
        assert record["astct_grade"] == grade
    details = [
        d
        for d in record["flag_details"]
        if d["field"] == field and d["kind"] == "data_quality"
    ]
    assert details, record["flag_details"]
    assert all(d["code"] in record["flags"] for d in details)


@pytest.mark.parametrize(
    ("fahrenheit", "grade"),
    [
        pytest.param(100.4, 1, id="100.4 F is exactly 38.0 C"),
        pytest.param(100.3, 0, id="100.3 F is below 38.0 C"),
        pytest.param(102.2, 1, id="102.2 F is 39.0 C"),
    ],
)
def test_fahrenheit_reading_is_converted_exactly(fahrenheit: float, grade: int) -> None:
    """A [degF] reading is converted to °C without crossing the fever threshold."""
    raw = {"value": fahrenheit, "unit": "[degF]"}
    record = grade_one_good_line(jline(temperature_raw=raw))
    assert record["astct_grade"] == grade
    if fahrenheit == 100.4:
        assert any("38.0 C" in reason for reason in record["reasons"])


def test_good_lines_after_bad_lines_are_graded_in_input_order() -> None:
    """Every line gets its own reply, in input order, and a bad line stops nothing."""
    lines = [
        jline(id="a", temperature_c=38.5),
        "not json at all",
        jline(id="b", temperature_c=38.5, sbp_mmhg=80, dbp_mmhg=40),
        jline(id="c", oxygen={"device": "helmet"}),
        "",
        jline(id=4, temperature_c=37.0),
        eline({"t_hours": 0, "temperature_c": 38.5}, {"t_hours": 4}, line_id="ep"),
        jline(id="e", temperature_c=24.0),
        jline(id="f", temperature_c=39.0, oxygen={"device": "cpap"}),
    ]
    proc = run_crsmon("grade", stdin="\n".join(lines) + "\n")
    out = records(proc)
    assert proc.returncode == 1
    summary = [(r["id"], r.get("line"), r.get("astct_grade")) for r in out]
    assert summary == [
        ("a", None, 1),
        (None, 2, None),
        ("b", None, 2),
        ("c", 4, None),
        (4, None, 0),
        ("ep", None, 1),
        ("e", 8, None),
        ("f", None, 4),
    ]
    for record in out:
        expected = ERROR_KEYS if "error" in record else GRADED_KEYS
        assert expected <= set(record)


def test_blank_lines_are_skipped_but_still_counted() -> None:
    """Blank and whitespace-only lines get no reply but keep the line numbering."""
    text = "\n   \n" + jline(id="g") + "\n\t\n" + jline(id="h", zz=1) + "\n\n"
    proc = run_crsmon("grade", stdin=text)
    out = records(proc)
    assert len(out) == 2
    assert out[0]["id"] == "g"
    assert "error" not in out[0]
    assert out[1] == {
        "id": "h",
        "line": 5,
        "error": "zz: unknown field (not part of the schema; nothing is ignored)",
    }


@pytest.mark.parametrize(
    ("line_id", "expected"),
    [
        pytest.param("patient-17/day-2", "patient-17/day-2", id="string id"),
        pytest.param(17, 17, id="integer id"),
        pytest.param(0, 0, id="zero id"),
    ],
)
def test_readable_id_is_echoed_on_graded_and_error_lines(
    line_id: str | int, expected: str | int
) -> None:
    """A string or integer id comes back unchanged, on good and on bad lines."""
    good = jline(id=line_id, temperature_c=38.5)
    bad = jline(id=line_id, temperature_c="hot")
    episode = json.dumps(
        {"id": line_id, "episode": {"age_years": 5, "observations": [{"t_hours": 1}]}}
    )
    proc = run_crsmon("grade", stdin=f"{good}\n{bad}\n{episode}\n")
    out = records(proc)
    assert [r["id"] for r in out] == [expected, expected, expected]
    assert type(out[0]["id"]) is type(expected)
    assert "error" in out[1]
    assert "error" not in out[2]


def test_missing_id_is_null() -> None:
    """A graded line without an id is answered with id null."""
    record = grade_one_good_line(json.dumps({"age_years": 30}))
    assert record["id"] is None


@pytest.mark.parametrize(
    "line",
    [
        pytest.param('{"id": "lost", "age_years": ', id="truncated JSON"),
        pytest.param('{"id": "lost", age_years: 30}', id="unquoted key"),
        pytest.param('["lost", 30]', id="array"),
    ],
)
def test_unreadable_line_has_null_id(line: str) -> None:
    """When the line cannot be read as an object its error carries id null."""
    record = grade_one_bad_line(line)
    assert record["id"] is None
    assert_names_path(record["error"], "$")


@pytest.mark.parametrize(
    "bad_id",
    [
        pytest.param(True, id="boolean"),
        pytest.param(1.5, id="float"),
        pytest.param({"mrn": 1}, id="object"),
        pytest.param(["a"], id="list"),
    ],
)
def test_id_of_wrong_type_is_an_error_with_null_id(bad_id: Any) -> None:
    """An id that is neither a string nor an integer is refused at ``id``."""
    record = grade_one_bad_line(json.dumps({"id": bad_id, "age_years": 30}))
    assert record["id"] is None
    assert_names_path(record["error"], "id")


@pytest.mark.parametrize(
    ("lines", "status"),
    [
        pytest.param([jline(id="a"), jline(id="b")], 0, id="all good"),
        pytest.param([jline(id="a"), jline(id="b", zz=1)], 1, id="last bad"),
        pytest.param(["{", jline(id="b")], 1, id="first bad"),
        pytest.param([jline(id="a", age_years=-1)], 1, id="only bad"),
        pytest.param(
            [eline({"t_hours": 0, "temperature_c": 38.5})], 0, id="episode good"
        ),
    ],
)
def test_exit_status(lines: list[str], status: int) -> None:
    """Exit status is 1 if any line erred and 0 otherwise."""
    proc = run_crsmon("grade", stdin="\n".join(lines) + "\n")
    assert proc.returncode == status
    assert len(records(proc)) == len(lines)


@pytest.mark.parametrize("source", ["no FILE", "dash", "file"])
def test_input_from_stdin_or_file(source: str, tmp_path: Path) -> None:
    """No FILE and ``-`` read standard input; a FILE argument reads that file."""
    text = jline(id="s1", temperature_c=38.5) + "\n" + jline(id="s2", zz=1) + "\n"
    if source == "file":
        path = tmp_path / "in.jsonl"
        path.write_text(text, encoding="utf-8")
        proc = run_crsmon("grade", str(path))
    elif source == "dash":
        proc = run_crsmon("grade", "-", stdin=text)
    else:
        proc = run_crsmon("grade", stdin=text)
    out = records(proc)
    assert proc.returncode == 1
    assert [r["id"] for r in out] == ["s1", "s2"]
    assert out[0]["astct_grade"] == 1
    assert out[1]["line"] == 2


def test_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    """A FILE that does not exist is a usage error without a traceback."""
    missing = tmp_path / "absent.jsonl"
    proc = run_crsmon("grade", str(missing))
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    assert "absent.jsonl" in proc.stderr


@pytest.mark.parametrize("text", ["", "\n", "\n  \n\t\n"])
def test_empty_input_gives_no_output_and_success(text: str) -> None:
    """Empty or all-blank input writes nothing and exits 0."""
    proc = run_crsmon("grade", stdin=text)
    assert proc.returncode == 0
    assert proc.stdout == ""


def test_graded_lines_have_the_contract_keys() -> None:
    """Assessment and episode replies carry the documented keys and types."""
    text = (
        jline(id="obs", temperature_c=38.5)
        + "\n"
        + eline(
            {"t_hours": 0, "temperature_c": 38.5},
            {"t_hours": 4, "temperature_c": 37.0},
        )
        + "\n"
    )
    proc = run_crsmon("grade", stdin=text)
    assert proc.returncode == 0
    assessment, episode = records(proc)
    for record in (assessment, episode):
        assert GRADED_KEYS | {"rule_set_version", "flag_details"} <= set(record)
        assert isinstance(record["astct_grade"], int)
        assert isinstance(record["reasons"], list)
        assert record["reasons"]
        assert all(isinstance(r, str) for r in record["reasons"])
        assert isinstance(record["missing_inputs"], list)
        assert isinstance(record["flags"], list)
        assert record["rule_set"] == "astct-2019"
    assert not EPISODE_KEYS & set(assessment)
    assert set(episode) >= EPISODE_KEYS
    assert episode["per_observation_astct_grades"] == [1, 0]
    assert episode["onset_t_hours"] == 0
    assert episode["astct_grade"] == 1
    assert len(episode["observations"]) == 2


def test_table_format_shows_ids_grades_errors_and_disclaimer() -> None:
    """``--format table`` prints a readable table with ids, grades and disclaimer."""
    text = "\n".join(
        [
            jline(id="alpha", temperature_c=38.5),
            jline(id="beta", temperature_c=38.5, sbp_mmhg=80, dbp_mmhg=40),
            jline(id="gamma", zz=1),
            "not json",
        ]
    )
    proc = run_crsmon("grade", "--format", "table", stdin=text + "\n")
    assert proc.returncode == 1
    assert DISCLAIMER in proc.stdout
    assert not proc.stdout.lstrip().startswith("{")
    rows = table_rows(proc.stdout)
    firsts = {row[0]: row[1] for row in rows if row and row[0]}
    assert firsts["alpha"] == "1"
    assert firsts["beta"] == "2"
    assert firsts["gamma"] == "error"
    assert firsts["line 4"] == "error"


def test_table_format_exits_zero_when_all_lines_are_good() -> None:
    """``--format table`` keeps the exit status contract for good input."""
    proc = run_crsmon(
        "grade", "--format", "table", stdin=jline(id="solo", temperature_c=39.0)
    )
    assert proc.returncode == 0
    assert "solo" in proc.stdout
    assert DISCLAIMER in proc.stdout


@pytest.mark.parametrize(
    "key",
    [
        "no-such-rules",
        "astct-2019+inotropes=sometimes",
        "astct-2019+no_such_setting=1",
    ],
)
def test_unknown_rule_set_is_a_usage_error(key: str) -> None:
    """An unknown --rule-set key exits 2 without grading and without a traceback."""
    proc = run_crsmon("grade", "--rule-set", key, stdin=jline() + "\n")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    assert "--rule-set" in proc.stderr


def test_rules_command_lists_the_settings() -> None:
    """``crsmon rules`` lists the setting used below and its values."""
    proc = run_crsmon("rules")
    assert proc.returncode == 0
    assert "astct-2019" in proc.stdout
    assert "inotropes" in proc.stdout
    assert "counted" in proc.stdout


def test_non_default_rule_set_is_used_and_reported() -> None:
    """A valid non-default key is echoed in rule_set and changes the grading."""
    line = jline(
        temperature_c=38.5,
        sbp_mmhg=80,
        dbp_mmhg=40,
        vasopressors=[{"drug": "dobutamine", "dose": 5, "unit": "ug/kg/min"}],
    )
    default = grade_one_good_line(line)
    counted = grade_one_good_line(line, "--rule-set", "astct-2019+inotropes=counted")
    assert default["rule_set"] == "astct-2019"
    assert counted["rule_set"] == "astct-2019+inotropes=counted"
    assert default["astct_grade"] == 2
    assert counted["astct_grade"] == 3
