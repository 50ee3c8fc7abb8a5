"""Spec: fever (R1, R2, R7 for fever, A15) and the °F conversion (grading.md §1.2, §4.3).

Other findings are left out so the grade shows the fever rule alone; the
``missing`` column proves that an unrecorded value is reported, never read as normal.
"""

from spec_tables import cases, check_row

FEVER = """
| case                                   | temp  | temp_f | attrib | grade | fired  | missing       |
| 38.0 C is fever (>=, A15)              | 38.0  |        |        | 1     | A15 R4 | sbp_mmhg      |
| 37.99 C is not rounded up              | 37.99 |        |        | 0     | A15 R2 |               |
| 37.9 C is not fever                    | 37.9  |        |        | 0     | R1 R2  |               |
| 41.0 C is fever                        | 41.0  |        |        | 1     | R1     |               |
| no temperature is not fever            |       |        |        | 0     | R1 R2  | temperature_c |
| fever attributed to another cause      | 38.8  |        | fever  | 0     | R7 R2  |               |
| 100.4 F is exactly 38.0 C              |       | 100.4  |        | 1     | R1     |               |
| 100.3 F is 37.94 C                     |       | 100.3  |        | 0     | R1     |               |
| 100.39 F stays below 38.0 C            |       | 100.39 |        | 0     | R1     |               |
| 102.2 F is 39.0 C                      |       | 102.2  |        | 1     | R1     |               |
"""


@cases(FEVER)
def test_fever(row: dict[str, str]) -> None:
    """A qualifying fever is >= 38.0 C on the recorded value, not attributed."""
    check_row(row)


def test_fahrenheit_reason_shows_the_original_reading() -> None:
    """A converted temperature names the reading it came from."""
    checked = check_row({"temp_f": "100.4", "grade": "1", "fired": "R1"})
    texts = [r.text for r in checked.result.reasons]
    assert (
        "fever: temperature 38.0 C (from 100.4 [degF]) >= 38.0 C -> fever [R1, A15]"
        in texts
    )
