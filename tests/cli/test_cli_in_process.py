"""CLI in process (click's runner): the same contract, measured by coverage.

The subprocess tests beside this file prove the installed console script; these
run the same commands in process so the shells' branches are covered too.
"""

from __future__ import annotations

import json

from click.testing import CliRunner

from crsmon.cli import main

GOOD = '{"id": "alpha-1", "age_years": 34, "temperature_c": 38.6}'
EPISODE = json.dumps(
    {
        "id": "e",
        "episode": {
            "age_years": 5,
            "observations": [
                {"t_hours": 10, "temperature_c": 38.5},
                {"t_hours": 20, "temperature_c": 37.0},
                {"t_hours": 50, "temperature_c": 37.0},
            ],
        },
    }
)


def test_grade_jsonl_in_order_with_an_error_line() -> None:
    """Graded and refused lines come out in input order; exit status 1."""
    stdin = "\n".join([GOOD, "{bad", "", EPISODE]) + "\n"
    result = CliRunner().invoke(main, ["grade"], input=stdin)
    assert result.exit_code == 1
    lines = [json.loads(x) for x in result.output.splitlines()]
    assert [x["id"] for x in lines] == ["alpha-1", None, "e"]
    assert lines[1] == {
        "id": None,
        "line": 2,
        "error": lines[1]["error"],
    }
    assert lines[1]["error"].startswith("$: not valid JSON")
    assert lines[2]["resolution_t_hours"] == 20
    assert lines[2]["courses"][0]["duration_hours"] == 10


def test_grade_table_lists_grades_errors_and_the_disclaimer() -> None:
    """The table shows each id, grade, the episode course and the disclaimer."""
    stdin = "\n".join([GOOD, '{"id": "z", "age_years": "x"}', EPISODE]) + "\n"
    result = CliRunner().invoke(main, ["grade", "--format", "table"], input=stdin)
    assert result.exit_code == 1
    text = result.output
    for needle in ("alpha-1", "error", "onset 10 h", "resolved 20 h", "device"):
        assert needle in text


def test_grade_table_of_an_unresolved_episode() -> None:
    """An episode with no onset reads 'none' and 'not yet' rather than None."""
    line = json.dumps({"episode": {"age_years": 5, "observations": [{"t_hours": 1}]}})
    result = CliRunner().invoke(main, ["grade", "--format", "table"], input=line)
    assert result.exit_code == 0
    assert "onset none" in result.output
    assert "not yet" in result.output
    assert "None" not in result.output


def test_unknown_rule_set_is_a_usage_error() -> None:
    """A bad --rule-set exits 2 and names the problem."""
    result = CliRunner().invoke(
        main, ["grade", "--rule-set", "astct-2019+x=y"], input=""
    )
    assert result.exit_code == 2
    assert "unknown setting" in result.output


def test_rules_lists_rules_citation_and_settings() -> None:
    """`crsmon rules` prints the citation, every rule id and every setting."""
    result = CliRunner().invoke(
        main, ["rules", "--rule-set", "astct-2019+inotropes=counted"]
    )
    assert result.exit_code == 0
    for needle in ("Lee DW", "R10", "A16", "§5.4", "waiver_window", "inotropes"):
        assert needle in result.output
    assert "astct-2019+inotropes=counted" in result.output


def test_version() -> None:
    """--version prints the package version."""
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert "crsmon" in result.output


def test_python_dash_m_runs_the_cli() -> None:
    """`python -m crsmon` is the same command line."""
    import subprocess
    import sys

    completed = subprocess.run(
        [sys.executable, "-m", "crsmon", "--version"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert completed.returncode == 0
    assert "crsmon" in completed.stdout


def test_time_far_from_the_infusion_is_refused() -> None:
    """A t_hours beyond ten years of the infusion is an entry error."""
    line = '{"id": 7, "age_years": 4, "t_hours": 1000000}'
    result = CliRunner().invoke(main, ["grade"], input=line)
    assert result.exit_code == 1
    reply = json.loads(result.output)
    assert reply["id"] == 7
    assert reply["error"].startswith("t_hours: must be within")
