"""Unit: the grading documentation names every rule, setting and flag the code has."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from crsmon.domain import ASTCT_2019
from crsmon.domain.plausibility import LIMITS
from crsmon.domain.rules import setting_choices

ROOT = Path(__file__).parents[2]
DOC = (ROOT / "docs" / "grading.md").read_text(encoding="utf-8")
SOURCE = "\n".join(
    p.read_text(encoding="utf-8") for p in (ROOT / "crsmon" / "domain").glob("*.py")
)


def _flag_codes() -> set[str]:
    codes = set(re.findall(r'(?:quality|monitoring|Flag)\(\s*"([a-z_0-9]+)"', SOURCE))
    extreme = {f"{name}_extreme" for name in ("temperature_c", "dbp_mmhg", "map_mmhg")}
    return codes | extreme | {"spo2_pct_extreme"}


@pytest.mark.parametrize("rule_id", sorted(ASTCT_2019.rules))
def test_every_rule_is_documented(rule_id: str) -> None:
    """Each rule and convention id appears in docs/grading.md as a whole id."""
    assert re.search(rf"(?<![\w§]){re.escape(rule_id)}(?!\d|\.\d)", DOC), rule_id


@pytest.mark.parametrize("name", sorted(setting_choices()))
def test_every_setting_and_value_is_documented(name: str) -> None:
    """Each setting and each of its values appears in docs/grading.md."""
    for value in setting_choices()[name]:
        if "<" not in value:
            assert f"{name}={value}" in DOC, f"{name}={value}"


@pytest.mark.parametrize("code", sorted(_flag_codes()))
def test_every_flag_code_is_documented(code: str) -> None:
    """Each flag code the core can raise is explained in docs/grading.md."""
    assert f"`{code}`" in DOC


def test_flag_codes_were_found() -> None:
    """The source scan finds the flags (so the test above cannot pass vacuously)."""
    assert {"possible_masked_crs", "hypoxemia_without_support"} <= _flag_codes()


def test_rejected_fields_are_documented() -> None:
    """Each field with a reject limit at intake is in the refused table."""
    for name in ("temperature_c", "sbp_mmhg", "dbp_mmhg", "map_mmhg", "spo2_pct"):
        assert LIMITS[name].reject_below is not None
        assert f"| {name} |" in DOC


def test_every_export_column_is_documented() -> None:
    """docs/exports.md lists each exported column with its current derivation."""
    from crsmon.services.exports import TABLES

    exports = (ROOT / "docs" / "exports.md").read_text(encoding="utf-8")
    for columns in TABLES.values():
        for c in columns:
            row = f"| `{c.name}` | {c.type} | {c.unit} | {c.derivation} |"
            assert row in exports, c.name


def test_the_policy_table_is_documented_as_it_is() -> None:
    from crsmon.auth.policy import markdown_table

    text = (ROOT / "docs" / "security.md").read_text(encoding="utf-8")
    assert markdown_table() in text
