"""The ASTCT 2019 consensus CRS grading rule set, as data (released, frozen).

Source: Lee DW, Santomasso BD, Locke FL, et al. ASTCT Consensus Grading for
Cytokine Release Syndrome and Neurologic Toxicity Associated with Immune Effector
Cells. Biol Blood Marrow Transplant. 2019;25(4):625-638.
doi:10.1016/j.bbmt.2018.12.758.

The rules R1–R10 and the project conventions A1–A16 and §5 are numbered as in
the project's grading specification (``docs/grading.md``). Status tags: [V]
checked against a public copy of the source table or footnotes; [R] agreed by
several secondary reproductions; [M] from knowledge of the paper, not re-checked;
[C] a project convention that no guideline states.

Do not edit this module's data: released rule sets are frozen and their
fingerprint is pinned by ``tests/unit/test_rule_sets.py``. A correction is a new
version (a new key or version string) with its own spec rows.
"""

from __future__ import annotations

from crsmon.domain.rules import (
    AgentRole,
    DeviceRule,
    HypotensionReference,
    RuleSet,
    RuleText,
    SbpBand,
    frozen_mapping,
)
from crsmon.domain.vocab import OxygenDevice, VasoactiveDrug

CITATION = (
    "Lee DW, Santomasso BD, Locke FL, et al. ASTCT Consensus Grading for Cytokine "
    "Release Syndrome and Neurologic Toxicity Associated with Immune Effector Cells. "
    "Biol Blood Marrow Transplant. 2019;25(4):625-638. doi:10.1016/j.bbmt.2018.12.758"
)

_LEE_TABLE = "Lee 2019, CRS grading table and footnotes"
_NEONATE_BELOW_YEARS = 28 / 365.25
"""28 days in decimal years (the PALS neonatal band)."""

_LOW = "low-flow oxygen"
_HIGH = "high-flow oxygen or facemask"
_PPV = "positive pressure"

_DEVICES = {
    OxygenDevice.ROOM_AIR: DeviceRule(0, "no supplemental oxygen"),
    OxygenDevice.NASAL_CANNULA: DeviceRule(2, "nasal cannula", by_flow=True),
    OxygenDevice.BLOW_BY: DeviceRule(2, _LOW + " (blow-by)"),
    OxygenDevice.HIGH_FLOW_NASAL_CANNULA: DeviceRule(3, _HIGH + " (HFNC)"),
    OxygenDevice.SIMPLE_FACE_MASK: DeviceRule(3, _HIGH + " (facemask)"),
    OxygenDevice.PARTIAL_REBREATHER_MASK: DeviceRule(3, _HIGH + " (facemask)"),
    OxygenDevice.NON_REBREATHER_MASK: DeviceRule(3, _HIGH + " (non-rebreather)"),
    OxygenDevice.VENTURI_MASK: DeviceRule(3, _HIGH + " (Venturi mask)"),
    OxygenDevice.TRACHEOSTOMY_COLLAR: DeviceRule(
        3, _HIGH + " (tracheostomy collar, graded as a facemask)"
    ),
    OxygenDevice.CPAP: DeviceRule(4, _PPV + " (CPAP)"),
    OxygenDevice.BIPAP: DeviceRule(4, _PPV + " (BiPAP)"),
    OxygenDevice.INVASIVE_MECHANICAL_VENTILATION: DeviceRule(
        4, _PPV + " (intubation and mechanical ventilation)"
    ),
}

_AGENTS = {
    VasoactiveDrug.NOREPINEPHRINE: AgentRole.VASOPRESSOR,
    VasoactiveDrug.EPINEPHRINE: AgentRole.VASOPRESSOR,
    VasoactiveDrug.PHENYLEPHRINE: AgentRole.VASOPRESSOR,
    VasoactiveDrug.DOPAMINE: AgentRole.VASOPRESSOR,
    VasoactiveDrug.ANGIOTENSIN_II: AgentRole.VASOPRESSOR,
    VasoactiveDrug.VASOPRESSIN: AgentRole.VASOPRESSIN_LIKE,
    VasoactiveDrug.TERLIPRESSIN: AgentRole.VASOPRESSIN_LIKE,
    VasoactiveDrug.DOBUTAMINE: AgentRole.NOT_COUNTED,
    VasoactiveDrug.MILRINONE: AgentRole.NOT_COUNTED,
}

_PALS_INFANT = (
    SbpBand(_NEONATE_BELOW_YEARS, 60, 0, "PALS neonate (<28 days): SBP < 60"),
    SbpBand(1, 70, 0, "PALS infant (28 days to <1 y): SBP < 70"),
)
_SBP_REFERENCES = {
    HypotensionReference.PALS: (
        *_PALS_INFANT,
        SbpBand(10, 70, 2, "PALS/Mahadeo 1–10 y: SBP < 70 + 2 × age"),
        SbpBand(float("inf"), 90, 0, "PALS/Mahadeo >10 y and adult: SBP < 90"),
    ),
    HypotensionReference.HAQUE: (
        *_PALS_INFANT,
        SbpBand(18, 65, 2, "Haque 5th percentile 1–17 y: SBP < 65 + 2 × age"),
        SbpBand(float("inf"), 90, 0, "adult: SBP < 90"),
    ),
    HypotensionReference.TREATMENT_ONLY: (),
}

_RULES = [
    RuleText(
        "R1",
        "Fever",
        "Temperature >= 38.0 °C not attributable to any other cause, compared on the "
        "recorded value and never rounded up; °F converted exactly.",
        _LEE_TABLE,
        "V",
    ),
    RuleText(
        "R2",
        "Fever at onset",
        "Every grade row needs fever, so CRS cannot be diagnosed without a "
        "qualifying fever.",
        _LEE_TABLE + "; definition text [M]",
        "V",
    ),
    RuleText(
        "R3",
        "Masked fever",
        "Once a patient has CRS and then receives antipyretic or anti-cytokine "
        "therapy, fever is no longer needed to grade severity; hypotension and "
        "hypoxia drive the grade.",
        _LEE_TABLE + ", footnote",
        "V",
    ),
    RuleText(
        "R4",
        "More severe event wins",
        "The grade is set by the more severe of hypotension or hypoxia not "
        "attributable to another cause; fever alone is grade 1.",
        _LEE_TABLE + ", footnote",
        "V",
    ),
    RuleText(
        "R5",
        "Hypotension",
        "Not requiring vasopressors = 2; one vasopressor with or without vasopressin "
        "= 3; multiple vasopressors excluding vasopressin = 4. No dose criterion.",
        _LEE_TABLE,
        "V",
    ),
    RuleText(
        "R6",
        "Hypoxia",
        "Low-flow nasal cannula (<= 6 L/min) or blow-by = 2; high-flow nasal cannula "
        "(> 6 L/min), facemask, non-rebreather or Venturi = 3; CPAP, BiPAP or "
        "intubation with mechanical ventilation = 4. No FiO2 or SpO2 criterion.",
        _LEE_TABLE + ", footnotes",
        "V",
    ),
    RuleText(
        "R7",
        "Attribution",
        "Fever, hypotension and hypoxia count only if not attributable to another "
        "cause; only a clinician's explicit attribution removes a finding.",
        _LEE_TABLE,
        "V",
    ),
    RuleText(
        "R8",
        "Organ toxicity",
        "Organ toxicities may be graded with CTCAE v5.0 but do not change the CRS "
        "grade.",
        _LEE_TABLE + ", footnote",
        "V",
    ),
    RuleText(
        "R9",
        "Grade 5",
        "Death due to CRS in which another cause is not the principal factor is "
        "grade 5, whatever the other findings.",
        "Lee 2019 (ICANS wording seen; CRS wording assumed parallel)",
        "R/M",
    ),
    RuleText(
        "R10",
        "Neurotoxicity is separate",
        "ICANS is graded on its own scale and does not feed the CRS grade.",
        _LEE_TABLE,
        "V",
    ),
    RuleText(
        "A1",
        "Numeric hypotension threshold",
        "ASTCT gives none. Default: PALS/Mahadeo 2019 for children (<28 d: 60; "
        "<1 y: 70; 1–10 y: 70 + 2 × completed years) and SBP < 90 otherwise; "
        "selectable: Haque 5th percentile, or treatment only. Strictly below.",
        "Mahadeo 2019 Table 2; Haque & Zaritsky 2007; grading.md §1.5",
        "C",
    ),
    RuleText(
        "A2",
        "Untreated low SBP",
        "A single untreated SBP below the threshold counts as hypotension not "
        "requiring vasopressors (grade 2 with fever).",
        "grading.md §1.7 (bp-015)",
        "C",
    ),
    RuleText(
        "A3",
        "Drug before CRS is established",
        "Default strict: a drug given before CRS onset does not waive fever; a "
        "possible_masked_crs flag is raised when hypotension or hypoxia is present.",
        "Lee 2019 footnote ('who have CRS then receive'); grading.md §1.7",
        "C",
    ),
    RuleText(
        "A4",
        "Waived fever, no hypotension or hypoxia",
        "No grade row is met: grade 0 for that observation; the episode continues.",
        "grading.md §1.7 (mask-004)",
        "C",
    ),
    RuleText(
        "A5",
        "Fever settles untreated while support continues",
        "Default literal: grade 0 with an afebrile_support_after_onset flag; "
        "selectable clinical: keep grading by hypotension and hypoxia.",
        "grading.md §1.7 (mask-006)",
        "C",
    ),
    RuleText(
        "A6",
        "Waiver duration",
        "Default: the whole episode after onset; selectable: a window in hours "
        "after each dose.",
        "grading.md §1.7",
        "C",
    ),
    RuleText(
        "A7",
        "Inotropes",
        "Default: dobutamine and milrinone are not vasopressors; selectable: counted.",
        "grading.md §1.7 (bp-010, bp-011)",
        "C",
    ),
    RuleText(
        "A8",
        "Angiotensin II and terlipressin",
        "Default: angiotensin II is a non-vasopressin vasopressor; terlipressin is "
        "treated like vasopressin. Both selectable.",
        "grading.md §1.7 (bp-012)",
        "C",
    ),
    RuleText(
        "A9",
        "Concurrent agents",
        "'Multiple vasopressors' counts distinct agents running at the same time, "
        "not agents used at any time in the episode.",
        "grading.md §1.7 (bp-023)",
        "C",
    ),
    RuleText(
        "A10",
        "Device versus flow",
        "Default: the device decides (blow-by is grade 2 at any flow, HFNC grade 3 "
        "at any flow); selectable: the rate decides.",
        "grading.md §1.7 (o2-006, o2-008)",
        "C",
    ),
    RuleText(
        "A11",
        "Nasal cannula with unknown flow",
        "Grade 2 with a data-quality flag and the flow reported missing.",
        "grading.md §1.7 (o2-015)",
        "C",
    ),
    RuleText(
        "A12",
        "Devices not named by ASTCT",
        "Default: tracheostomy collar graded as a facemask (3); selectable: by flow. "
        "Unchanged home oxygen is attributable to another cause; comfort oxygen is "
        "not hypoxia.",
        "grading.md §1.7",
        "C",
    ),
    RuleText(
        "A13",
        "Ventilation for airway protection",
        "Not CRS hypoxia when the clinician attributes it to another cause.",
        "grading.md §1.7 (o2-018)",
        "C",
    ),
    RuleText(
        "A14",
        "Low SpO2 without oxygen",
        "ASTCT grades support, not saturation: the grade is unchanged and a "
        "hypoxemia_without_support flag is raised when SpO2 < 90 % with no "
        "supplemental oxygen.",
        "grading.md §1.7 (o2-019); SpO2 < 90 % on room air: Mahadeo 2019 CARTOX",
        "C",
    ),
    RuleText(
        "A15",
        "Fever threshold wording",
        ">= 38.0 °C, not > 38 °C as some derived material writes.",
        _LEE_TABLE + ", footnote",
        "V",
    ),
    RuleText(
        "A16",
        "Episode onset, resolution and duration",
        "Not defined by ASTCT; the project conventions of §5 apply.",
        "grading.md §5",
        "C",
    ),
    RuleText(
        "§5.1",
        "Onset",
        "The time of the first observation with ASTCT grade >= 1 (a qualifying "
        "fever); earlier afebrile findings are not back-dated.",
        "grading.md §5; CIBMTR form 4100 (date of first CRS symptom)",
        "C",
    ),
    RuleText(
        "§5.2",
        "Maximum grade",
        "The maximum per-observation grade, timed at its first occurrence.",
        "grading.md §5",
        "C",
    ),
    RuleText(
        "§5.3",
        "Fever waiver in an episode",
        "A fever-masking drug given at or after onset waives fever for all later "
        "observations; one given before onset does not.",
        "grading.md §5",
        "C",
    ),
    RuleText(
        "§5.4",
        "Resolution and duration",
        "Resolution is the first grade-0 observation after onset followed by >= 24 h "
        "of grade-0 observations; duration = resolution - onset.",
        "grading.md §5",
        "C",
    ),
]

ASTCT_2019 = RuleSet(
    name="astct-2019",
    version="1.0.0",
    title="ASTCT 2019 consensus CRS grading",
    citation=CITATION,
    fever_threshold_c=38.0,
    low_flow_max_l_min=6.0,
    devices=frozen_mapping(_DEVICES),
    agents=frozen_mapping(_AGENTS),
    sbp_references=frozen_mapping(_SBP_REFERENCES),
    hypoxemia_spo2_below_pct=90.0,
    temperature_disagreement_c=0.1,
    resolution_window_h=24.0,
    rules=frozen_mapping({r.id: r for r in _RULES}),
    device_overrides=frozen_mapping(
        {
            ("device_vs_flow", "flow"): frozen_mapping(
                {
                    OxygenDevice.BLOW_BY: DeviceRule(2, "blow-by", by_flow=True),
                    OxygenDevice.HIGH_FLOW_NASAL_CANNULA: DeviceRule(
                        3, "high-flow nasal cannula", by_flow=True
                    ),
                }
            ),
            ("trach_collar", "flow"): frozen_mapping(
                {
                    OxygenDevice.TRACHEOSTOMY_COLLAR: DeviceRule(
                        3, "tracheostomy collar", by_flow=True
                    )
                }
            ),
        }
    ),
    agent_overrides=frozen_mapping(
        {
            ("inotropes", "counted"): frozen_mapping(
                {
                    VasoactiveDrug.DOBUTAMINE: AgentRole.VASOPRESSOR,
                    VasoactiveDrug.MILRINONE: AgentRole.VASOPRESSOR,
                }
            ),
            ("terlipressin", "vasopressor"): frozen_mapping(
                {VasoactiveDrug.TERLIPRESSIN: AgentRole.VASOPRESSOR}
            ),
            ("angiotensin_ii", "excluded"): frozen_mapping(
                {VasoactiveDrug.ANGIOTENSIN_II: AgentRole.NOT_COUNTED}
            ),
        }
    ),
)
"""ASTCT 2019 with the project's default conventions: key ``astct-2019``."""
