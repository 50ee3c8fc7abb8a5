"""The grading reference: the same ASTCT rules as the grader, without reasons.

:func:`minimal_grade` reads every threshold and table from the same
:class:`~crsmon.domain.rules.RuleSet` and returns the grade only: no reasons,
flags or missing inputs. It is what grading costs when nothing explains itself;
the benchmark reports the real grader's throughput against it, and checks that
both give the same grade for every assessment it times (a disagreement stops
the run: the reference would be wrong, or the grader).

Pure: a function of its arguments.
"""

from __future__ import annotations

import math

from crsmon.domain.rules import (
    AfebrileAfterOnset,
    AgeBasis,
    AgentRole,
    MaskedFever,
    RuleSet,
)
from crsmon.domain.snapshot import Assessment, MaskingDrug
from crsmon.domain.units import temperature_to_celsius


def _fever(a: Assessment, rules: RuleSet) -> bool:
    t_c = a.temperature_c
    if t_c is None and a.temperature_raw is not None:
        t_c = temperature_to_celsius(a.temperature_raw.value, a.temperature_raw.unit)
    if t_c is None or t_c < rules.fever_threshold_c:
        return False
    return not a.fever_attributable_to_other_cause


def _waived(a: Assessment, rules: RuleSet) -> bool:
    c = rules.conventions
    drugs = a.masking_drugs
    if a.crs_established and MaskingDrug.SINCE_ONSET in drugs:
        return True
    if c.masked_fever is MaskedFever.LENIENT and MaskingDrug.BEFORE_ONSET in drugs:
        return True
    return a.crs_established and c.afebrile_after_onset is AfebrileAfterOnset.CLINICAL


def _hemodynamic(a: Assessment, rules: RuleSet) -> int:
    roles = {rules.agent_role(v.drug) for v in a.vasopressors}
    pressors = {
        v.drug
        for v in a.vasopressors
        if rules.agent_role(v.drug) is AgentRole.VASOPRESSOR
    }
    if pressors or AgentRole.VASOPRESSIN_LIKE in roles:
        grade = 4 if len(pressors) >= 2 else 3
        return 0 if a.hypotension_attributable_to_other_cause else grade
    if a.hypotension_assessed is not None:
        if not a.hypotension_assessed:
            return 0
        return 0 if a.hypotension_attributable_to_other_cause else 2
    if a.iv_fluid_bolus_for_hypotension:
        return 0 if a.hypotension_attributable_to_other_cause else 2
    if a.sbp_mmhg is None:
        return 0
    c = rules.conventions
    for band in rules.sbp_references[c.hypotension]:
        if a.age_years < band.below_age_years:
            age = (
                a.age_years
                if c.hypotension_age is AgeBasis.DECIMAL
                else math.floor(a.age_years)
            )
            if a.sbp_mmhg < band.base_mmhg + band.per_year_mmhg * age:
                return 0 if a.hypotension_attributable_to_other_cause else 2
            return 0
    return 0


def _respiratory(a: Assessment, rules: RuleSet) -> int:
    oxygen = a.oxygen
    if oxygen is None:
        return 0
    rule = rules.device_rule(oxygen.device)
    if rule.by_flow and oxygen.flow_l_min is not None:
        grade = 2 if oxygen.flow_l_min <= rules.low_flow_max_l_min else 3
    else:
        grade = rule.grade
    if grade == 0 or a.hypoxia_attributable_to_other_cause:
        return 0
    return 0 if a.oxygen_for_comfort_only else grade


def minimal_grade(a: Assessment, rules: RuleSet) -> int:
    """The ASTCT grade of one assessment under ``rules``, without reasons."""
    organ = max(_hemodynamic(a, rules), _respiratory(a, rules))
    if a.death and a.death_attributable_to_crs:
        return 5
    if _fever(a, rules):
        return max(1, organ)
    if _waived(a, rules):
        return organ
    return 0
