"""Spec: the numeric SBP reference for untreated hypotension (A1, grading.md §1.5).

ASTCT names no number. Default: PALS/Mahadeo 2019 (neonate < 60; infant < 70;
1–10 y: 70 + 2 × completed years; older and adults < 90), strictly below. The
Haque 5th percentile (65 + 2 × age, 1–17 y) and decimal age are selectable.
Every row is febrile and untreated, so 2 means "hypotensive", 1 "not".
"""

from spec_tables import cases, check_row

PEDIATRIC = """
| case                                   | age    | sbp | settings                                   | grade | fired |
| neonate 10 d, SBP 59 < 60              | 0.0274 | 59  |                                            | 2     | R5    |
| neonate 10 d, SBP 60 is not < 60       | 0.0274 | 60  |                                            | 1     | A1    |
| 27 days is still a neonate: SBP 65     | 0.0739 | 65  |                                            | 1     | A1    |
| 29 days is an infant: SBP 65 < 70      | 0.0794 | 65  |                                            | 2     | R5    |
| infant 6 mo, SBP 69 < 70               | 0.5    | 69  |                                            | 2     | R5    |
| infant 6 mo, SBP 70                    | 0.5    | 70  |                                            | 1     | A1    |
| 1 y: threshold 72                      | 1      | 71  |                                            | 2     | R5    |
| 1 y: SBP 72 is not < 72                | 1      | 72  |                                            | 1     | A1    |
| 4 y: SBP 77 < 78                       | 4      | 77  |                                            | 2     | R5    |
| 4 y: SBP 78                            | 4      | 78  |                                            | 1     | A1    |
| 5.9 y uses completed years: 80         | 5.9    | 80  |                                            | 1     | A1    |
| 5.9 y with decimal age: 81.8           | 5.9    | 80  | hypotension_age=decimal                    | 2     | R5    |
| 10 y: SBP 89 < 90                      | 10     | 89  |                                            | 2     | R5    |
| 10 y: SBP 90                           | 10     | 90  |                                            | 1     | A1    |
| 10.5 y decimal age stays at 90         | 10.5   | 90  | hypotension_age=decimal                    | 1     | A1    |
| 15 y: SBP 89 < 90                      | 15     | 89  |                                            | 2     | R5    |
| adult: SBP 89                          | 30     | 89  |                                            | 2     | R5    |
| adult: SBP 90                          | 30     | 90  |                                            | 1     | A1    |
| Haque 1 y: 67                          | 1      | 66  | hypotension=haque                          | 2     | R5    |
| Haque 1 y: SBP 67                      | 1      | 67  | hypotension=haque                          | 1     | A1    |
| Haque 4 y: SBP 77 is not < 73          | 4      | 77  | hypotension=haque                          | 1     | A1    |
| Haque 15 y: SBP 94 < 95                | 15     | 94  | hypotension=haque                          | 2     | R5    |
| Haque 17 y: SBP 98 < 99                | 17     | 98  | hypotension=haque                          | 2     | R5    |
| Haque adult: SBP 90                    | 30     | 90  | hypotension=haque                          | 1     | A1    |
| Haque infant falls back to PALS 70     | 0.5    | 69  | hypotension=haque                          | 2     | R5    |
| treatment only: SBP 50 untreated       | 30     | 50  | hypotension=treatment_only                 | 1     | A1    |
"""


@cases(PEDIATRIC)
def test_sbp_reference(row: dict[str, str]) -> None:
    """An untreated SBP strictly below the age threshold is hypotension."""
    row = {"temp": "38.5", **row}
    check_row(row)


def test_reason_names_the_threshold_and_its_source() -> None:
    """The reason gives the computed threshold and the reference band."""
    row = {"temp": "38.5", "age": "4", "sbp": "77", "grade": "2"}
    texts = [r.text for r in check_row(row).result.reasons]
    assert any("SBP 77.0 mmHg < 78 mmHg (PALS/Mahadeo 1–10 y" in t for t in texts)
