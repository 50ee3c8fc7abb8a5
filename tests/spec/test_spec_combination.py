"""Spec: how findings combine into a grade (R2, R3, R4, R8, R9, R10, A3–A5).

R4: fever plus the more severe of hypotension and hypoxia. R2: no grade without
a qualifying fever, unless R3 waives it for patients who *have* CRS and then got
an antipyretic or anti-cytokine drug. A3/A5 raise monitoring flags where the
strict reading grades 0 but CRS may be hidden.
"""

from spec_tables import cases, check_row

COMBINATION = """
| case                                               | temp | bolus | pressors       | o2                  | flow | est | drug | death   | settings                     | grade | fired  | flags                        | missing                  |
| fever alone -> 1 (R4)                              | 39.5 |       |                | room_air            |      |     |      |         |                              | 1     | R4     |                              |                          |
| paper's example: pressor + cannula -> 3 (R4)       | 39.5 |       | norepinephrine | nasal_cannula       | 2    |     |      |         |                              | 3     | R4     |                              |                          |
| hypoxia wins over hypotension (R4)                 | 39.5 | y     |                | bipap               |      |     |      |         |                              | 4     | R4     |                              |                          |
| hypotension wins over hypoxia (R4)                 | 39.5 |       | norepinephrine+epinephrine | nasal_cannula | 2 |    |      |         |                              | 4     | R4     |                              |                          |
| afebrile pressor, no CRS -> 0 (R2)                 | 37.2 |       | norepinephrine | room_air            |      |     |      |         |                              | 0     | R2     |                              |                          |
| masked: established + drug, pressor -> 3 (R3)      | 37.2 |       | norepinephrine | room_air            |      | y   | y    |         |                              | 3     | R3     |                              |                          |
| masked: established + drug, BiPAP -> 4 (R3)        | 36.9 |       |                | bipap               |      | y   | y    |         |                              | 4     | R3     |                              |                          |
| masked, nothing left -> 0 (A4)                     | 36.8 |       |                | room_air            |      | y   | y    |         |                              | 0     | A4     |                              |                          |
| masked, no temperature recorded -> graded (R3)     |      |       | vasopressin    | room_air            |      | y   | y    |         |                              | 3     | R3     |                              | temperature_c            |
| new fever after drug, bolus -> 2                   | 38.4 | y     |                | room_air            |      | y   | y    |         |                              | 2     | R4     |                              |                          |
| drug before CRS, afebrile bolus -> 0 (A3)          | 37.1 | y     |                | room_air            |      |     | y    |         |                              | 0     | R2     | possible_masked_crs          |                          |
| drug before CRS, lenient reading -> 2 (A3)         | 37.1 | y     |                | room_air            |      |     | y    |         | masked_fever=lenient         | 2     | A3     |                              |                          |
| drug before CRS, afebrile, nothing -> 0, no flag   | 37.1 |       |                | room_air            |      |     | y    |         |                              | 0     | R2     |                              |                          |
| established, untreated, afebrile cannula (A5)      | 37.3 |       |                | nasal_cannula       | 2    | y   |      |         |                              | 0     | R2     | afebrile_support_after_onset |                          |
| same under the clinical reading (A5)               | 37.3 |       |                | nasal_cannula       | 2    | y   |      |         | afebrile_after_onset=clinical | 2    | A5     |                              |                          |
| established, afebrile, no support -> 0, no flag    | 37.3 |       |                | room_air            |      | y   |      |         |                              | 0     | R2     |                              |                          |
| CRS death -> 5 (R9)                                | 38.5 |       |                | nasal_cannula       | 2    |     |      | crs     |                              | 5     | R9     |                              |                          |
| CRS death afebrile, no support -> 5 (R9)           | 36.9 |       |                | room_air            |      | y   | y    | crs     |                              | 5     | R9     |                              |                          |
| CRS death with no findings at all -> 5 (R9)        |      |       |                |                     |      |     |      | crs     |                              | 5     | R9     |                              |                          |
| death from leukaemia -> other findings (R9)        | 38.5 |       |                | nasal_cannula       | 2    |     |      | other   |                              | 2     | R9 R4  |                              |                          |
| death, cause unknown -> not 5, flagged (R9)        | 38.5 |       |                | nasal_cannula       | 2    |     |      | unknown |                              | 2     | R9     | death_attribution_missing    | death_attributable_to_crs |
"""


@cases(COMBINATION)
def test_combination(row: dict[str, str]) -> None:
    """Findings combine by R4 with fever required unless waived (R2, R3)."""
    check_row(row)


UNCHANGED = """
| case                                        | temp | organ                                              | icans | grade | fired |
| grade 3 creatinine does not change CRS (R8) | 38.5 | creatinine_increased=3                             |       | 1     | R8    |
| grade 4 transaminitis does not (R8)         | 38.5 | ast_increased=4 alt_increased=4                    |       | 1     | R8    |
| ICANS is graded separately (R10)            | 38.5 |                                                    | y     | 1     | R10   |
| afebrile organ toxicity is still 0 (R8)     | 37.0 | creatinine_increased=4                             |       | 0     | R8    |
"""


@cases(UNCHANGED)
def test_organ_toxicity_and_icans_do_not_change_the_grade(row: dict[str, str]) -> None:
    """Organ toxicity (R8) and ICANS (R10) are recorded but never graded into CRS."""
    check_row(row)


MASKING = """
| case                                                   | temp | bolus | est | drug           | settings             | grade | fired | flags                        |
| dose from an earlier course may mask: flagged          | 37.0 | y     |     | earlier_course |                      | 0     | R2    | possible_masked_crs          |
| earlier-course dose never waives, even when lenient    | 37.0 | y     |     | earlier_course | masked_fever=lenient | 0     | R2    | possible_masked_crs          |
| expired waiver after onset: literal 0, flagged         | 37.0 | y     | y   | expired        |                      | 0     | R2    | afebrile_support_after_onset |
| a dose since onset still in effect waives              | 37.0 | y     | y   | since_onset+expired |                 | 2     | R3    |                              |
"""


@cases(MASKING)
def test_when_a_masking_drug_was_given(row: dict[str, str]) -> None:
    """Only a dose since onset (or before onset, leniently) waives fever (R3, A3, A6)."""
    check_row(row)


def test_expired_waiver_says_so() -> None:
    """The A5 flag names an expired waiver window rather than 'no drug given'."""
    row = {"temp": "37.0", "bolus": "y", "est": "y", "drug": "expired", "grade": "0"}
    row["flags"] = "afebrile_support_after_onset"
    (flag,) = check_row(row).result.flags
    assert "waiver window" in flag.message


def test_a_crs_death_explains_itself_once() -> None:
    """R9 gives one final reason, naming what the grade would be without the death."""
    row = {"temp": "38.5", "o2": "nasal_cannula", "flow": "2", "death": "crs"}
    result = check_row({**row, "grade": "5", "fired": "R9"}).result
    grade_reasons = [r for r in result.reasons if r.finding == "grade"]
    assert len(grade_reasons) == 1
    assert grade_reasons[0].grade == 5
    assert "without it: fever with hypotension grade 0, hypoxia grade 2, grade 2" in (
        grade_reasons[0].text
    )
    assert [r.rule for r in result.reasons].count("R9") == 1
