"""Spec: data-quality flags beside the grade (grading.md §4.4 flag column, A11).

A questionable value is graded as recorded and flagged for confirmation; it is
never dropped, corrected or read as normal.
"""

from spec_tables import cases, check_row

QUALITY = """
| case                                              | age  | temp | temp_f | sbp | dbp | map | o2            | flow | spo2 | comfort | assessed | grade | fired | flags                          |
| °C and °F agree: no flag                          | 34   | 38.0 | 100.4  |     |     |     | room_air      |      |      |         |          | 1     | R1    |                                |
| °C and °F differ by 0.1 C exactly: no flag        | 34   | 38.1 | 100.4  |     |     |     | room_air      |      |      |         |          | 1     | R1    |                                |
| °C and °F differ by more than 0.1 C: °C graded    | 34   | 38.5 | 100.0  |     |     |     | room_air      |      |      |         |          | 1     | R1    | temperature_sources_disagree   |
| 42.0 C is extreme but graded                      | 34   | 42.0 |        |     |     |     | room_air      |      |      |         |          | 1     | R1    | temperature_c_extreme          |
| 33.5 C is extreme                                 | 34   | 33.5 |        |     |     |     | room_air      |      |      |         |          | 0     | R1    | temperature_c_extreme          |
| 107.6 F (42 C) is extreme                         | 34   |      | 107.6  |     |     |     | room_air      |      |      |         |          | 1     | R1    | temperature_c_extreme          |
| SBP 45 in an adult is extreme                     | 34   | 38.5 |        | 45  |     |     | room_air      |      |      |         |          | 2     | R5    | sbp_mmhg_extreme               |
| SBP 45 in an infant is not extreme                | 0.5  | 38.5 |        | 45  |     |     | room_air      |      |      |         |          | 2     | R5    |                                |
| SBP 38 in an infant is extreme                    | 0.5  | 38.5 |        | 38  |     |     | room_air      |      |      |         |          | 2     | R5    | sbp_mmhg_extreme               |
| SBP 260 is extreme                                | 34   | 38.5 |        | 260 | 90  |     | room_air      |      |      |         |          | 1     | A1    | sbp_mmhg_extreme               |
| DBP 15 is extreme                                 | 34   | 38.5 |        | 95  | 15  |     | room_air      |      |      |         |          | 1     | A1    | dbp_mmhg_extreme               |
| MAP 190 is extreme                                | 34   | 38.5 |        |     |     | 190 | room_air      |      |      |         |          | 1     | R1    | map_mmhg_extreme               |
| MAP outside DBP..SBP is inconsistent              | 34   | 38.5 |        | 120 | 70  | 130 | room_air      |      |      |         |          | 1     | A1    | map_mmhg_inconsistent          |
| MAP between DBP and SBP: no flag                  | 34   | 38.5 |        | 120 | 70  | 87  | room_air      |      |      |         |          | 1     | A1    |                                |
| cannula at 0 L/min is questioned                  | 34   | 38.5 |        |     |     |     | nasal_cannula | 0    |      |         |          | 2     | R6    | oxygen_flow_zero               |
| comfort oxygen with SpO2 85 is questioned         | 34   | 38.5 |        |     |     |     | nasal_cannula | 2    | 85   | y       |          | 1     | A12   | comfort_oxygen_conflict        |
| comfort oxygen with SpO2 95: no flag              | 34   | 38.5 |        |     |     |     | nasal_cannula | 2    | 95   | y       |          | 1     | A12   |                                |
| assessed no hypotension, SBP 85: conflict shown   | 34   | 38.5 |        | 85  |     |     | room_air      |      |      |         | n        | 1     | R5    | hypotension_assessment_conflict |
| assessed no hypotension, SBP 110: no conflict     | 34   | 38.5 |        | 110 |     |     | room_air      |      |      |         | n        | 1     | R5    |                                |
"""


@cases(QUALITY)
def test_data_quality(row: dict[str, str]) -> None:
    """Questionable values are graded as recorded and flagged, never dropped."""
    check_row(row)
