"""Spec: hypoxia graded by the support it needs (R6, R7, A10–A14).

Every row has a fever, so the grade is the respiratory grade (minimum 1).
"""

from spec_tables import cases, check_row

HYPOXIA = """
| case                                           | temp | o2                              | flow | spo2 | attrib  | comfort | settings             | grade | fired    | flags                      | missing           |
| room air -> 1                                  | 38.5 | room_air                        |      |      |         |         |                      | 1     | R6 R4    |                            |                   |
| oxygen not recorded: room air, reported        | 38.5 |                                 |      |      |         |         |                      | 1     | R6       |                            | oxygen            |
| nasal cannula 0.5 L/min (infant) -> 2          | 38.5 | nasal_cannula                   | 0.5  |      |         |         |                      | 2     | R6       |                            |                   |
| nasal cannula 6.0 L/min is low flow -> 2       | 38.5 | nasal_cannula                   | 6.0  |      |         |         |                      | 2     | R6       |                            |                   |
| nasal cannula 6.1 L/min is high flow -> 3      | 38.5 | nasal_cannula                   | 6.1  |      |         |         |                      | 3     | R6       |                            |                   |
| conventional cannula 8 L/min -> 3              | 38.5 | nasal_cannula                   | 8    |      |         |         |                      | 3     | R6       |                            |                   |
| nasal cannula 20 L/min -> 3, confirm device    | 38.5 | nasal_cannula                   | 20   |      |         |         |                      | 3     | R6       | nasal_cannula_flow_high    |                   |
| nasal cannula, no flow -> 2 and flagged (A11)  | 38.5 | nasal_cannula                   |      |      |         |         |                      | 2     | A11      | oxygen_flow_missing        | oxygen.flow_l_min |
| blow-by 10 L/min is low flow by device (A10)   | 38.5 | blow_by                         | 10   |      |         |         |                      | 2     | A10      |                            |                   |
| blow-by 10 L/min by flow (A10 flow)            | 38.5 | blow_by                         | 10   |      |         |         | device_vs_flow=flow  | 3     | A10      |                            |                   |
| blow-by without flow is flagged                | 38.5 | blow_by                         |      |      |         |         |                      | 2     | R6       | oxygen_flow_missing        | oxygen.flow_l_min |
| HFNC 4 L/min is high flow by device (A10)      | 38.5 | high_flow_nasal_cannula         | 4    |      |         |         |                      | 3     | A10      |                            |                   |
| HFNC 4 L/min by flow (A10 flow)                | 38.5 | high_flow_nasal_cannula         | 4    |      |         |         | device_vs_flow=flow  | 2     | A10      |                            |                   |
| HFNC 30 L/min -> 3                             | 38.5 | high_flow_nasal_cannula         | 30   |      |         |         |                      | 3     | R6       |                            |                   |
| simple face mask -> 3                          | 38.5 | simple_face_mask                | 5    |      |         |         |                      | 3     | R6       |                            |                   |
| partial rebreather -> 3                        | 38.5 | partial_rebreather_mask         | 10   |      |         |         |                      | 3     | R6       |                            |                   |
| non-rebreather -> 3                            | 38.5 | non_rebreather_mask             | 15   |      |         |         |                      | 3     | R6       |                            |                   |
| Venturi mask -> 3                              | 38.5 | venturi_mask                    |      |      |         |         |                      | 3     | R6       |                            |                   |
| tracheostomy collar 5 L/min -> 3 (A12)         | 38.5 | tracheostomy_collar             | 5    |      |         |         |                      | 3     | A12      |                            |                   |
| tracheostomy collar by flow (A12 flow)         | 38.5 | tracheostomy_collar             | 5    |      |         |         | trach_collar=flow    | 2     | A12      |                            |                   |
| CPAP -> 4                                      | 38.5 | cpap                            |      |      |         |         |                      | 4     | R6       |                            |                   |
| BiPAP -> 4                                     | 38.5 | bipap                           |      |      |         |         |                      | 4     | R6       |                            |                   |
| intubation and ventilation -> 4                | 38.5 | invasive_mechanical_ventilation |      |      |         |         |                      | 4     | R6       |                            |                   |
| non-rebreather for a PE (R7) -> 1              | 38.5 | non_rebreather_mask             | 15   |      | hypoxia |         |                      | 1     | R7 A13   |                            |                   |
| ventilated for airway protection (A13) -> 1    | 38.5 | invasive_mechanical_ventilation |      |      | hypoxia |         |                      | 1     | A13      |                            |                   |
| comfort oxygen is not hypoxia (A12) -> 1       | 38.5 | nasal_cannula                   | 2    |      |         | y       |                      | 1     | A12      |                            |                   |
| SpO2 89 on room air: 1 plus alert (A14)        | 38.5 | room_air                        |      | 89   |         |         |                      | 1     | A14      | hypoxemia_without_support  |                   |
| SpO2 89, oxygen not recorded: alert (A14)      | 38.5 |                                 |      | 89   |         |         |                      | 1     | A14      | hypoxemia_without_support  | oxygen            |
| SpO2 90 on room air: no alert                  | 38.5 | room_air                        |      | 90   |         |         |                      | 1     | R6       |                            |                   |
| SpO2 85 on a cannula: graded, no alert         | 38.5 | nasal_cannula                   | 2    | 85   |         |         |                      | 2     | R6       |                            |                   |
| SpO2 65 is flagged as unreliable               | 38.5 | nasal_cannula                   | 2    | 65   |         |         |                      | 2     | R6       | spo2_pct_extreme           |                   |
| room air with a flow is questioned             | 38.5 | room_air                        | 2    |      |         |         |                      | 1     | R6       | room_air_with_flow         |                   |
"""


@cases(HYPOXIA)
def test_hypoxia(row: dict[str, str]) -> None:
    """Hypoxia grades by the device and, for a cannula, the flow; never by SpO2."""
    check_row(row)


def test_reason_example_of_the_issue() -> None:
    """The reason reads as the issue's example: finding, value, threshold, grade."""
    row = {"temp": "38.5", "o2": "nasal_cannula", "flow": "7.0", "grade": "3"}
    texts = [r.text for r in check_row(row).result.reasons]
    assert "hypoxia: nasal_cannula at 7.0 L/min > 6 L/min -> grade 3 [R6]" in texts


CITATIONS = """
| case                                       | temp | o2                      | flow | settings            | grade | rule    |
| HFNC 20 L/min: A10 decided nothing         | 38.5 | high_flow_nasal_cannula | 20   |                     | 3     | R6      |
| HFNC 4 L/min: the device rule decided      | 38.5 | high_flow_nasal_cannula | 4    |                     | 3     | R6, A10 |
| blow-by 2 L/min: A10 decided nothing       | 38.5 | blow_by                 | 2    |                     | 2     | R6      |
| blow-by 10 L/min: the device rule decided  | 38.5 | blow_by                 | 10   |                     | 2     | R6, A10 |
| blow-by 10 L/min by flow                   | 38.5 | blow_by                 | 10   | device_vs_flow=flow | 3     | R6, A10 |
| trach collar 5 L/min as a facemask         | 38.5 | tracheostomy_collar     | 5    |                     | 3     | R6, A12 |
| trach collar 5 L/min by flow               | 38.5 | tracheostomy_collar     | 5    | trach_collar=flow   | 2     | R6, A12 |
| trach collar 10 L/min: A12 decided nothing | 38.5 | tracheostomy_collar     | 10   |                     | 3     | R6      |
| cannula without flow                       | 38.5 | nasal_cannula           |      |                     | 2     | R6, A11 |
"""


@cases(CITATIONS)
def test_hypoxia_reason_cites_exactly_the_rules_that_decided(
    row: dict[str, str],
) -> None:
    """A convention (A10, A11, A12) is cited only where it decided the grade."""
    row = {**row, "flags": "oxygen_flow_missing" if not row["flow"] else ""}
    hypoxia = [r for r in check_row(row).result.reasons if r.finding == "hypoxia"]
    assert [r.rule for r in hypoxia] == [row["rule"]]
