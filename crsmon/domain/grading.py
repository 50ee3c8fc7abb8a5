"""The ASTCT evaluator: one pure function applies a rule set to one assessment.

It follows the reference algorithm of grading.md §1.3 with every threshold and
category read from the :class:`~crsmon.domain.rules.RuleSet`. Each component
(fever, fever waiver, hypotension, hypoxia) adds a :class:`Reason` whether or not
it fired, so a grade 0 explains itself as fully as a grade 4, and an input the
grader needed but did not get is named in ``missing_inputs`` instead of being
read as normal.
"""

from __future__ import annotations

import math

from crsmon.domain.explain import Explanation, num
from crsmon.domain.quality import check_flow, check_plausibility
from crsmon.domain.results import GradeResult
from crsmon.domain.rules import (
    AfebrileAfterOnset,
    AgeBasis,
    AgentRole,
    DeviceRule,
    MaskedFever,
    RuleSet,
    SbpBand,
)
from crsmon.domain.snapshot import Assessment, MaskingDrug
from crsmon.domain.units import celsius_exact, exact_decimal, temperature_to_celsius


def grade_assessment(assessment: Assessment, rules: RuleSet) -> GradeResult:
    """Grade one assessment snapshot under ``rules`` (grading.md §1.3).

    Returns the ASTCT grade 0–5 with its reasons, missing inputs and flags.
    """
    ex = Explanation()
    a = assessment
    fever = _fever(a, rules, ex)
    waived = _waiver(a, rules, ex, fever)
    hemo = _hemodynamic(a, rules, ex)
    resp = _respiratory(a, rules, ex)
    grade = _combine(a, ex, fever=fever, waived=waived, hemo=hemo, resp=resp)
    _unchanged_by(a, ex)
    check_plausibility(a, ex)
    return ex.result(grade, rules)


def _crs_death(a: Assessment, ex: Explanation) -> bool:
    """R9: a death due to CRS is grade 5 whatever the other findings."""
    if not a.death:
        return False
    if a.death_attributable_to_crs:
        return True
    if a.death_attributable_to_crs is None:
        ex.lacks("death_attributable_to_crs")
        ex.quality(
            "death_attribution_missing",
            "death recorded without saying whether CRS caused it; grade 5 needs a "
            "death attributed to CRS, so the other findings were graded",
            "death_attributable_to_crs",
        )
        value = "cause not recorded"
    else:
        value = "not attributed to CRS"
    ex.reason("R9", "death", value, "", "graded from the other findings")
    return False


def _temperature_c(a: Assessment, rules: RuleSet, ex: Explanation) -> float | None:
    raw = a.temperature_raw
    if a.temperature_c is not None:
        if raw is not None:
            gap = abs(
                exact_decimal(a.temperature_c) - celsius_exact(raw.value, raw.unit)
            )
            if gap > exact_decimal(rules.temperature_disagreement_c):
                ex.quality(
                    "temperature_sources_disagree",
                    f"temperature_c {num(a.temperature_c)} C and temperature_raw "
                    f"{num(raw.value)} {raw.unit} differ by {float(gap):.2f} C "
                    f"(> {rules.temperature_disagreement_c:g} C); "
                    "temperature_c was graded",
                    "temperature_raw",
                )
        return a.temperature_c
    if raw is not None:
        return temperature_to_celsius(raw.value, raw.unit)
    ex.lacks("temperature_c")
    return None


def _fever(a: Assessment, rules: RuleSet, ex: Explanation) -> bool:
    """R1, R7, A15: temperature >= 38.0 C on the recorded value, not attributed."""
    t_c = _temperature_c(a, rules, ex)
    limit = f"{rules.fever_threshold_c:.1f} C"
    if t_c is None:
        ex.reason("R1", "fever", "temperature not recorded", "", "no fever assessed")
        return False
    value = f"temperature {num(t_c)} C"
    if a.temperature_c is None and a.temperature_raw is not None:
        value += f" (from {num(a.temperature_raw.value)} {a.temperature_raw.unit})"
    if t_c < rules.fever_threshold_c:
        ex.reason("R1, A15", "fever", value, f"< {limit}", "no fever")
        return False
    if a.fever_attributable_to_other_cause:
        ex.reason(
            "R7",
            "fever",
            value + ", attributed to another cause by a clinician",
            f">= {limit}",
            "not counted",
        )
        return False
    ex.reason("R1, A15", "fever", value, f">= {limit}", "fever", 1)
    return True


def _waiver(a: Assessment, rules: RuleSet, ex: Explanation, fever: bool) -> bool:
    """R3 with A3, A5 and A6: when fever is no longer needed to grade."""
    c = rules.conventions
    drugs = a.masking_drugs
    if fever:
        return False
    if a.crs_established and MaskingDrug.SINCE_ONSET in drugs:
        ex.reason(
            "R3",
            "fever waiver",
            "CRS established, then antipyretic or anti-cytokine therapy given",
            "",
            "fever not required",
        )
        return True
    if c.masked_fever is MaskedFever.LENIENT and MaskingDrug.BEFORE_ONSET in drugs:
        ex.reason(
            "A3",
            "fever waiver",
            "antipyretic or anti-cytokine therapy given before CRS was established",
            "(masked_fever=lenient)",
            "fever not required",
        )
        return True
    if a.crs_established and c.afebrile_after_onset is AfebrileAfterOnset.CLINICAL:
        ex.reason(
            "A5",
            "fever waiver",
            "CRS established, no qualifying fever and no fever-masking drug in effect",
            "(afebrile_after_onset=clinical)",
            "fever not required",
        )
        return True
    return False


def _hemodynamic(a: Assessment, rules: RuleSet, ex: Explanation) -> int:
    """R5, R7, A7–A9: grade hypotension by the treatment it needs."""
    drugs = list(dict.fromkeys(v.drug for v in a.vasopressors))  # A9: concurrent
    roles = {d: rules.agent_role(d) for d in drugs}
    for d in drugs:
        if roles[d] is AgentRole.NOT_COUNTED:
            ex.reason(
                rules.agent_convention(d) or "R5",
                "vasoactive agent",
                f"{d} running",
                "(not a vasopressor under this rule set)",
                "not counted",
            )
    pressors = [d for d in drugs if roles[d] is AgentRole.VASOPRESSOR]
    vaso_like = [d for d in drugs if roles[d] is AgentRole.VASOPRESSIN_LIKE]
    counted = pressors + vaso_like
    if counted:
        names = " + ".join(counted) + " running"
        if len(pressors) >= 2:
            grade = 4
            criterion = (
                f"({len(pressors)} vasopressors excluding vasopressin: multiple)"
            )
        else:
            grade = 3
            criterion = "(one vasopressor, with or without vasopressin)"
        if a.hypotension_assessed is False:
            ex.quality(
                "hypotension_assessment_conflict",
                "hypotension_assessed is false while a vasopressor is running; the "
                "vasopressor was graded",
                "hypotension_assessed",
            )
        # A9: agents running at the same time; one drug at two rates is one agent.
        cited = ["R5"] + ["A9"] * (len(a.vasopressors) > len(drugs))
        cited += [c for d in counted if (c := rules.agent_convention(d))]
        rule = ", ".join(dict.fromkeys(cited))
        return _unless_attributed(a, ex, names, criterion, grade, rule)
    return _hypotension_without_vasopressor(a, rules, ex)


def _unless_attributed(
    a: Assessment,
    ex: Explanation,
    value: str,
    criterion: str,
    grade: int,
    rule: str = "R5",
) -> int:
    if a.hypotension_attributable_to_other_cause:
        ex.reason(
            "R7",
            "hypotension",
            value + ", attributed to another cause by a clinician",
            criterion,
            "not counted",
        )
        return 0
    ex.reason(rule, "hypotension", value, criterion, f"grade {grade}", grade)
    return grade


def _sbp_threshold(
    age_years: float, bands: tuple[SbpBand, ...], basis: AgeBasis
) -> tuple[float, SbpBand] | None:
    for band in bands:
        if age_years < band.below_age_years:
            age = age_years if basis is AgeBasis.DECIMAL else math.floor(age_years)
            return band.base_mmhg + band.per_year_mmhg * age, band
    return None


def _hypotension_without_vasopressor(
    a: Assessment, rules: RuleSet, ex: Explanation
) -> int:
    """A1, A2: hypotension not requiring vasopressors is grade 2."""
    criterion = "(not requiring vasopressors)"
    if a.hypotension_assessed is not None:
        if a.hypotension_assessed:
            return _unless_attributed(
                a, ex, "assessed present by a clinician", criterion, 2
            )
        ex.reason("R5", "hypotension", "assessed absent by a clinician", "", "none")
        _assessed_absent_conflict(a, rules, ex)
        return 0
    if a.iv_fluid_bolus_for_hypotension:
        return _unless_attributed(
            a, ex, "IV fluid bolus given for blood pressure", criterion, 2
        )
    c = rules.conventions
    bands = rules.sbp_references[c.hypotension]
    if a.sbp_mmhg is None:
        if bands:
            ex.lacks("sbp_mmhg")
            outcome = "not assessable (not read as normal)"
        else:
            outcome = "none"
        ex.reason(
            "R5",
            "hypotension",
            "no blood pressure, fluid bolus or vasopressor recorded",
            "",
            outcome,
        )
        return 0
    value = f"SBP {num(a.sbp_mmhg)} mmHg"
    found = _sbp_threshold(a.age_years, bands, c.hypotension_age)
    if found is None:
        ex.reason(
            "A1",
            "hypotension",
            value + ", no fluid bolus or vasopressor",
            f"(no SBP threshold under hypotension={c.hypotension})",
            "none",
        )
        return 0
    threshold, band = found
    if a.sbp_mmhg < threshold:
        return _unless_attributed(
            a,
            ex,
            value,
            f"< {threshold:g} mmHg ({band.label}; not requiring vasopressors)",
            2,
            "R5, A1, A2",
        )
    ex.reason(
        "A1", "hypotension", value, f">= {threshold:g} mmHg ({band.label})", "none"
    )
    return 0


def _assessed_absent_conflict(a: Assessment, rules: RuleSet, ex: Explanation) -> None:
    """The clinician's call wins (§1.3), but a disagreeing reading is shown."""
    c = rules.conventions
    bands = rules.sbp_references[c.hypotension]
    found = (
        None
        if a.sbp_mmhg is None
        else _sbp_threshold(a.age_years, bands, c.hypotension_age)
    )
    low_sbp = found is not None and a.sbp_mmhg is not None and a.sbp_mmhg < found[0]
    if low_sbp or a.iv_fluid_bolus_for_hypotension:
        ex.quality(
            "hypotension_assessment_conflict",
            "hypotension_assessed is false while the SBP or a fluid bolus for blood "
            "pressure says hypotension; the clinician's assessment was graded",
            "hypotension_assessed",
        )


def _respiratory(a: Assessment, rules: RuleSet, ex: Explanation) -> int:
    """R6, R7, A10–A14: grade hypoxia by the support it needs."""
    oxygen = a.oxygen
    if oxygen is None:
        ex.lacks("oxygen")
        ex.reason(
            "R6",
            "hypoxia",
            "oxygen support not recorded; room air assumed (§0.1 default)",
            "",
            "none",
        )
        _hypoxemia_without_support(a, rules, ex)
        return 0
    device, flow = oxygen.device, oxygen.flow_l_min
    rule = rules.device_rule(device)
    check_flow(device, flow, rule.by_flow, ex)
    low = rules.low_flow_max_l_min
    grade = _device_grade(rule, flow, low)
    value = str(device) if flow is None else f"{device} at {num(flow)} L/min"
    if rule.by_flow and flow is not None:
        criterion = f"{'<=' if grade == 2 else '>'} {low:g} L/min"
    else:
        criterion = f"({rule.category})"
    cited = ["R6"] + ["A11"] * (rule.by_flow and flow is None)
    alternative = rules.device_alternative(device)
    # A10/A12 are cited only where the convention decided the grade.
    if alternative is not None and _device_grade(alternative[1], flow, low) != grade:
        cited.append(alternative[0])
    rule_id = ", ".join(cited)
    if grade == 0:
        ex.reason(rule_id, "hypoxia", value, criterion, "none")
        _hypoxemia_without_support(a, rules, ex)
        return 0
    if a.hypoxia_attributable_to_other_cause:
        ex.reason(
            "R7, A13",
            "hypoxia",
            value + ", attributed to another cause by a clinician",
            criterion,
            "not counted",
        )
        return 0
    if a.oxygen_for_comfort_only:
        spo2, low = a.spo2_pct, rules.hypoxemia_spo2_below_pct
        if spo2 is not None and spo2 < low:
            ex.quality(
                "comfort_oxygen_conflict",
                f"oxygen marked for comfort only, but SpO2 is {num(spo2)} % "
                f"(< {low:g} %): confirm there is no oxygenation deficit",
                "oxygen_for_comfort_only",
            )
        ex.reason(
            "A12",
            "hypoxia",
            value + ", for comfort only (no oxygenation deficit)",
            criterion,
            "not counted",
        )
        return 0
    ex.reason(rule_id, "hypoxia", value, criterion, f"grade {grade}", grade)
    return grade


def _device_grade(rule: DeviceRule, flow: float | None, low_max_l_min: float) -> int:
    """R6: a flow-graded device is low flow (2) up to the limit, high flow (3) above."""
    if rule.by_flow and flow is not None:
        return 2 if flow <= low_max_l_min else 3
    return rule.grade


def _hypoxemia_without_support(a: Assessment, rules: RuleSet, ex: Explanation) -> None:
    """A14: low SpO2 with no oxygen applied is a monitoring signal, not a grade."""
    spo2, limit = a.spo2_pct, rules.hypoxemia_spo2_below_pct
    if spo2 is None or spo2 >= limit:
        return
    ex.reason(
        "A14",
        "hypoxemia",
        f"SpO2 {num(spo2)} % with no supplemental oxygen",
        f"< {limit:g} %",
        "grade unchanged (ASTCT grades oxygen support, not saturation); flagged",
    )
    ex.monitoring(
        "hypoxemia_without_support",
        f"SpO2 {num(spo2)} % (< {limit:g} %) with no supplemental oxygen recorded: "
        "assess the need for oxygen; ASTCT grades the support once it is given",
    )


def _combine(
    a: Assessment, ex: Explanation, *, fever: bool, waived: bool, hemo: int, resp: int
) -> int:
    """R2, R4, R9, A3–A5: fever plus the more severe of hypotension and hypoxia."""
    organ = max(hemo, resp)
    components = f"hypotension grade {hemo}, hypoxia grade {resp}"
    if fever:
        grade, rule = max(1, organ), "R4"
        value = f"fever with {components}"
        criterion = (
            "(fever alone is grade 1)" if organ == 0 else "(the more severe wins)"
        )
    elif waived:
        grade, rule = organ, "R3, R4" if organ else "A4"
        value = f"fever waived with {components}"
        criterion = "(the more severe wins)" if organ else "(no hypotension or hypoxia)"
    else:
        grade, rule = 0, "R2"
        value = f"no qualifying fever and no fever waiver ({components})"
        criterion = "(every grade needs fever)"
        if organ:
            _afebrile_signals(a, ex, organ)
    if _crs_death(a, ex):
        value = f"death attributed to CRS (without it: {value}, grade {grade})"
        ex.reason("R9", "grade", value, "(whatever else)", "grade 5", 5)
        return 5
    outcome = f"grade {grade}" + ("" if grade else " (no CRS by ASTCT)")
    ex.reason(rule, "grade", value, criterion, outcome, grade)
    return grade


_HIDDEN_BY = {
    MaskingDrug.BEFORE_ONSET: "given before CRS onset",
    MaskingDrug.EARLIER_COURSE: "given during an earlier, resolved CRS course",
}


def _afebrile_signals(a: Assessment, ex: Explanation, organ: int) -> None:
    """A3, A5: hypotension or hypoxia without fever may be CRS that a drug hides."""
    hidden_by = [text for kind, text in _HIDDEN_BY.items() if kind in a.masking_drugs]
    if hidden_by:
        ex.monitoring(
            "possible_masked_crs",
            f"hypotension or hypoxia (grade {organ} if CRS) without a qualifying "
            "fever after an antipyretic or anti-cytokine drug "
            f"{' and '.join(hidden_by)}: the drug may be masking fever (the strict "
            "reading of the ASTCT footnote grades 0)",
        )
    if a.crs_established:
        drug = (
            "the waiver window of the fever-masking drug given since onset has run out"
            if MaskingDrug.EXPIRED in a.masking_drugs
            else "no fever-masking drug was given since onset"
        )
        ex.monitoring(
            "afebrile_support_after_onset",
            f"CRS established, now without a qualifying fever, and {drug}, but "
            f"hypotension or hypoxia persists (grade {organ} under the clinical "
            "reading): the literal ASTCT reading grades 0",
        )


def _unchanged_by(a: Assessment, ex: Explanation) -> None:
    """R8 and R10: organ toxicity and ICANS are recorded but never change the grade."""
    for term, ctcae in a.organ_toxicity_ctcae:
        ex.reason(
            "R8",
            "organ toxicity",
            f"{term} CTCAE grade {ctcae}",
            "",
            "does not change the CRS grade",
        )
    if a.icans is not None:
        ex.reason(
            "R10",
            "ICANS",
            "neurologic findings recorded",
            "",
            "graded on the separate ICANS scale, not the CRS grade",
        )
