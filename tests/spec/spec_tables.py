"""Spec tables: clinical cases written as pipe tables a clinician can read.

Each spec module writes its cases as a table whose first row names the columns.
A blank cell means "not recorded" (or the §0.1 default); ``y``/``n`` are booleans.
Input columns (all optional):

==========  ==================================================================
case        a short name for the case (used as the pytest id)
age         age_years (decimal years)
temp        temperature_c
temp_f      temperature_raw in [degF]
sbp         sbp_mmhg; ``dbp`` and ``map`` likewise
bolus       ``y``: IV fluid bolus given for hypotension
assessed    ``y``/``n``: clinician's hypotension_assessed
pressors    running agents joined by ``+``, e.g. ``norepinephrine+vasopressin``
o2          oxygen device (§0.3); ``flow`` its flow in L/min
spo2        spo2_pct
attrib      findings attributed to another cause: ``fever``, ``hypotension``,
            ``hypoxia`` joined by ``+``
comfort     ``y``: oxygen for comfort only
est         ``y``: CRS already established
drug        ``y``: antipyretic or anti-cytokine drug given (after onset when
            ``est``, else before it); or kinds joined by ``+``: ``since_onset``,
            ``expired``, ``before_onset``, ``earlier_course``
death       ``crs``, ``other`` or ``unknown`` (attribution not recorded)
organ       CTCAE terms, e.g. ``creatinine_increased=3``
icans       ``y``: ICANS findings recorded
settings    rule-set settings, e.g. ``inotropes=counted`` (blank = defaults)
==========  ==================================================================

Expected columns: ``grade``; ``fired`` (rule ids that must appear among the
reasons, space separated); ``flags`` (the exact set of flag codes; blank =
none); ``missing`` (inputs that must be reported missing, space separated).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from crsmon.domain import (
    Assessment,
    GradeResult,
    IcansFindings,
    OxygenSupport,
    TemperatureReading,
    VasopressorInfusion,
    grade_assessment,
    resolve_rule_set,
)
from crsmon.domain.snapshot import MaskingDrug
from crsmon.domain.vocab import (
    OxygenDevice,
    TemperatureUnit,
    VasoactiveDrug,
    VasopressorDoseUnit,
)


def parse_table(text: str) -> list[dict[str, str]]:
    """Rows of a pipe table as dicts of column name to stripped cell text."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
    header, body = rows[0], rows[1:]
    out = []
    for cells in body:
        if set("".join(cells)) <= set("-:"):
            continue
        if len(cells) != len(header):
            raise ValueError(f"row has {len(cells)} cells, header {len(header)}")
        out.append(dict(zip(header, cells, strict=True)))
    return out


def _num(row: dict[str, str], column: str) -> float | None:
    text = row.get(column, "")
    return float(text) if text else None


def _yes(row: dict[str, str], column: str) -> bool:
    return row.get(column, "") == "y"


def _masking_drugs(row: dict[str, str]) -> frozenset[MaskingDrug]:
    drug = row.get("drug", "")
    if drug == "y":  # as the neutral schema's antipyretic_or_anticytokine_given
        established = _yes(row, "est")
        kind = MaskingDrug.SINCE_ONSET if established else MaskingDrug.BEFORE_ONSET
        return frozenset({kind})
    return frozenset(MaskingDrug(k) for k in filter(None, drug.split("+")))


def build_assessment(row: dict[str, str]) -> Assessment:
    """An Assessment from a spec row's input columns."""
    attrib = set(filter(None, row.get("attrib", "").split("+")))
    temp_f = _num(row, "temp_f")
    o2 = row.get("o2", "")
    assessed = row.get("assessed", "")
    death = row.get("death", "")
    organ = row.get("organ", "")
    return Assessment(
        age_years=_num(row, "age") or 34.0,
        temperature_c=_num(row, "temp"),
        temperature_raw=(
            None
            if temp_f is None
            else TemperatureReading(temp_f, TemperatureUnit.FAHRENHEIT)
        ),
        sbp_mmhg=_num(row, "sbp"),
        dbp_mmhg=_num(row, "dbp"),
        map_mmhg=_num(row, "map"),
        iv_fluid_bolus_for_hypotension=_yes(row, "bolus"),
        hypotension_assessed=None if not assessed else assessed == "y",
        vasopressors=tuple(
            VasopressorInfusion(VasoactiveDrug(d), 0.1, VasopressorDoseUnit.UG_KG_MIN)
            for d in filter(None, row.get("pressors", "").split("+"))
        ),
        oxygen=(None if not o2 else OxygenSupport(OxygenDevice(o2), _num(row, "flow"))),
        spo2_pct=_num(row, "spo2"),
        fever_attributable_to_other_cause="fever" in attrib,
        hypotension_attributable_to_other_cause="hypotension" in attrib,
        hypoxia_attributable_to_other_cause="hypoxia" in attrib,
        oxygen_for_comfort_only=_yes(row, "comfort"),
        crs_established=_yes(row, "est"),
        masking_drugs=_masking_drugs(row),
        death=bool(death),
        death_attributable_to_crs={"crs": True, "other": False}.get(death),
        organ_toxicity_ctcae=tuple(
            (term, int(g))
            for term, g in (p.split("=") for p in filter(None, organ.split()))
        ),
        icans=IcansFindings(ice_score=5) if _yes(row, "icans") else None,
    )


def rule_set_of(row: dict[str, str]) -> Any:
    """The rule set a row asks for (defaults when the settings cell is blank)."""
    settings = row.get("settings", "")
    return resolve_rule_set("astct-2019" + (f"+{settings}" if settings else ""))


@dataclass(frozen=True)
class Checked:
    """A graded row, for extra assertions in a spec module."""

    row: dict[str, str]
    result: GradeResult


def check_row(row: dict[str, str]) -> Checked:
    """Grade a row and assert every expected column."""
    rules = rule_set_of(row)
    result = grade_assessment(build_assessment(row), rules)
    why = "\n".join(r.text for r in result.reasons)
    assert result.grade == int(row["grade"]), why
    fired = {part for r in result.reasons for part in r.rule.split(", ")}
    for rule in row.get("fired", "").split():
        assert rule in fired, f"{rule} not among reasons:\n{why}"
    expected_flags = set(row.get("flags", "").split())
    assert set(result.flag_codes) == expected_flags, why
    for path in row.get("missing", "").split():
        assert path in result.missing_inputs, result.missing_inputs
    assert result.rule_set == rules.key
    return Checked(row, result)


def cases(text: str) -> pytest.MarkDecorator:
    """``pytest.mark.parametrize`` over a spec table's rows, ids from ``case``."""
    rows = parse_table(text)
    return pytest.mark.parametrize("row", rows, ids=[r["case"] for r in rows])
