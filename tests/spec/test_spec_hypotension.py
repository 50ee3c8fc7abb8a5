"""Spec: hypotension graded by the treatment it needs (R5, R7, A1, A2, A7–A9).

Every row has a fever, so the grade is the hemodynamic grade (minimum 1).
"""

from spec_tables import cases, check_row

HYPOTENSION = """
| case                                        | temp | sbp | bolus | assessed | pressors                                   | attrib      | settings                 | grade | fired       | flags                           |
| no vasopressor, fluid bolus -> 2            | 38.5 |     | y     |          |                                            |             |                          | 2     | R5 R4       |                                 |
| clinician says hypotension -> 2             | 38.5 |     |       | y        |                                            |             |                          | 2     | R5          |                                 |
| clinician says none overrides SBP 80        | 38.5 | 80  |       | n        |                                            |             |                          | 1     | R5          | hypotension_assessment_conflict |
| clinician says none overrides bolus         | 38.5 |     | y     | n        |                                            |             |                          | 1     | R5          | hypotension_assessment_conflict |
| untreated adult SBP 89 -> 2 (A2)            | 38.5 | 89  |       |          |                                            |             |                          | 2     | R5 A1 A2    |                                 |
| untreated adult SBP 90 -> 1                 | 38.5 | 90  |       |          |                                            |             |                          | 1     | A1          |                                 |
| SBP 89 under treatment_only -> 1            | 38.5 | 89  |       |          |                                            |             | hypotension=treatment_only | 1   | A1          |                                 |
| one vasopressor -> 3                        | 38.5 |     |       |          | norepinephrine                             |             |                          | 3     | R5          |                                 |
| vasopressin alone -> 3                      | 38.5 |     |       |          | vasopressin                                |             |                          | 3     | R5          |                                 |
| vasopressor + vasopressin -> 3              | 38.5 |     |       |          | norepinephrine+vasopressin                 |             |                          | 3     | R5          |                                 |
| two non-vasopressin agents -> 4             | 38.5 |     |       |          | norepinephrine+epinephrine                 |             |                          | 4     | R5          |                                 |
| two agents plus vasopressin -> 4            | 38.5 |     |       |          | norepinephrine+phenylephrine+vasopressin   |             |                          | 4     | R5          |                                 |
| same agent at two rates is one agent (A9)   | 38.5 |     |       |          | norepinephrine+norepinephrine              |             |                          | 3     | R5 A9       |                                 |
| dobutamine is not a vasopressor (A7)        | 38.5 | 86  | y     |          | dobutamine                                 |             |                          | 2     | A7 R5       |                                 |
| milrinone alone, no hypotension -> 1 (A7)   | 38.5 | 110 |       |          | milrinone                                  |             |                          | 1     | A7          |                                 |
| inotropes counted when selected (A7)        | 38.5 | 86  | y     |          | dobutamine                                 |             | inotropes=counted        | 3     | R5          |                                 |
| norepinephrine + dobutamine counted -> 4    | 38.5 |     |       |          | norepinephrine+dobutamine                  |             | inotropes=counted        | 4     | R5          |                                 |
| angiotensin II is a vasopressor (A8)        | 38.5 |     |       |          | norepinephrine+angiotensin_ii              |             |                          | 4     | R5          |                                 |
| angiotensin II excluded when selected (A8)  | 38.5 |     |       |          | norepinephrine+angiotensin_ii              |             | angiotensin_ii=excluded  | 3     | A8 R5       |                                 |
| terlipressin is like vasopressin (A8)       | 38.5 |     |       |          | norepinephrine+terlipressin                |             |                          | 3     | R5          |                                 |
| vasopressin + terlipressin is not multiple  | 38.5 |     |       |          | vasopressin+terlipressin                   |             |                          | 3     | R5          |                                 |
| terlipressin as a vasopressor (A8)          | 38.5 |     |       |          | norepinephrine+terlipressin                |             | terlipressin=vasopressor | 4     | R5          |                                 |
| pressor attributed to another cause (R7)    | 38.5 |     |       |          | phenylephrine                              | hypotension |                          | 1     | R7          |                                 |
| bolus attributed to another cause (R7)      | 38.5 |     | y     |          |                                            | hypotension |                          | 1     | R7          |                                 |
| pressor with assessed=n is still graded     | 38.5 |     |       | n        | norepinephrine                             |             |                          | 3     | R5          | hypotension_assessment_conflict |
"""


@cases(HYPOTENSION)
def test_hypotension(row: dict[str, str]) -> None:
    """Hypotension grades by agents counted, never by dose."""
    check_row(row)


def test_no_blood_pressure_is_reported_missing() -> None:
    """With no BP, bolus or pressor, hypotension is not assessable, not normal."""
    checked = check_row({"temp": "38.5", "grade": "1", "missing": "sbp_mmhg"})
    assert any("not assessable" in r.text for r in checked.result.reasons)


def test_treatment_only_does_not_ask_for_sbp() -> None:
    """Under hypotension=treatment_only an SBP is not needed, so not missing."""
    row = {"temp": "38.5", "grade": "1", "settings": "hypotension=treatment_only"}
    assert "sbp_mmhg" not in check_row(row).result.missing_inputs


def test_reason_names_the_agents_and_the_criterion() -> None:
    """The hemodynamic reason names each agent and the row of the table."""
    row = {"temp": "38.5", "pressors": "norepinephrine+epinephrine", "grade": "4"}
    texts = [r.text for r in check_row(row).result.reasons]
    assert (
        "hypotension: norepinephrine + epinephrine running "
        "(2 vasopressors excluding vasopressin: multiple) -> grade 4 [R5]"
    ) in texts
