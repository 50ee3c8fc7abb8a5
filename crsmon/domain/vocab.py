"""Controlled vocabularies of the assessment snapshot (grading.md §0.3).

Each enum value is the exact string the intake accepts. What a value *means* for
grading (which devices are high flow, which drugs count as vasopressors) lives in
the rule set (:mod:`crsmon.domain.astct2019`), not here: a vocabulary names
things, a rule set judges them.
"""

from __future__ import annotations

from enum import StrEnum


class OxygenDevice(StrEnum):
    """Oxygen delivery device, the highest-level support in the window."""

    ROOM_AIR = "room_air"
    NASAL_CANNULA = "nasal_cannula"
    """Conventional nasal cannula, graded by flow (R6)."""
    BLOW_BY = "blow_by"
    HIGH_FLOW_NASAL_CANNULA = "high_flow_nasal_cannula"
    """Heated and humidified high-flow system."""
    SIMPLE_FACE_MASK = "simple_face_mask"
    PARTIAL_REBREATHER_MASK = "partial_rebreather_mask"
    NON_REBREATHER_MASK = "non_rebreather_mask"
    VENTURI_MASK = "venturi_mask"
    TRACHEOSTOMY_COLLAR = "tracheostomy_collar"
    CPAP = "cpap"
    BIPAP = "bipap"
    """Any bilevel non-invasive ventilation."""
    INVASIVE_MECHANICAL_VENTILATION = "invasive_mechanical_ventilation"


class VasoactiveDrug(StrEnum):
    """Vasoactive infusion agents accepted at intake (§0.3)."""

    NOREPINEPHRINE = "norepinephrine"
    EPINEPHRINE = "epinephrine"
    PHENYLEPHRINE = "phenylephrine"
    DOPAMINE = "dopamine"
    VASOPRESSIN = "vasopressin"
    ANGIOTENSIN_II = "angiotensin_ii"
    TERLIPRESSIN = "terlipressin"
    DOBUTAMINE = "dobutamine"
    MILRINONE = "milrinone"


class TreatmentDrug(StrEnum):
    """Drugs that can mask fever (§0.3): antipyretics, anti-cytokine agents, steroids.

    The ``other_*`` members let a feed record a drug of a known class whose name is
    not listed, instead of forcing it into a wrong name or dropping it.
    """

    ACETAMINOPHEN = "acetaminophen"
    IBUPROFEN = "ibuprofen"
    KETOROLAC = "ketorolac"
    METAMIZOLE = "metamizole"
    NAPROXEN = "naproxen"
    OTHER_ANTIPYRETIC = "other_antipyretic"
    TOCILIZUMAB = "tocilizumab"
    SILTUXIMAB = "siltuximab"
    ANAKINRA = "anakinra"
    OTHER_ANTICYTOKINE = "other_anticytokine"
    DEXAMETHASONE = "dexamethasone"
    METHYLPREDNISOLONE = "methylprednisolone"
    HYDROCORTISONE = "hydrocortisone"
    PREDNISONE = "prednisone"
    PREDNISOLONE = "prednisolone"
    OTHER_CORTICOSTEROID = "other_corticosteroid"


class TemperatureUnit(StrEnum):
    """UCUM temperature units accepted in ``temperature_raw`` (grading.md §4.3)."""

    CELSIUS = "Cel"
    FAHRENHEIT = "[degF]"


class VasopressorDoseUnit(StrEnum):
    """UCUM dose-rate units for vasoactive infusions (grading.md §4.3).

    ASTCT counts agents, not doses (R5), so the dose is kept for other scales and
    for review; the unit must still be one we can name, never a free string.
    """

    UG_KG_MIN = "ug/kg/min"
    UG_MIN = "ug/min"
    NG_KG_MIN = "ng/kg/min"
    U_MIN = "U/min"
    MU_MIN = "mU/min"
    MU_KG_MIN = "mU/kg/min"
    U_KG_H = "U/kg/h"
    MU_KG_H = "mU/kg/h"


class Consciousness(StrEnum):
    """ICANS level-of-consciousness domain (grading.md §3.5)."""

    ALERT = "alert"
    AWAKENS_SPONTANEOUSLY = "awakens_spontaneously"
    AWAKENS_TO_VOICE = "awakens_to_voice"
    AWAKENS_TO_TACTILE = "awakens_to_tactile"
    UNAROUSABLE = "unarousable"


class Seizure(StrEnum):
    """ICANS seizure domain (grading.md §3.5)."""

    NONE = "none"
    RESOLVED_RAPIDLY = "resolved_rapidly"
    NONCONVULSIVE_RESOLVED_WITH_INTERVENTION = (
        "nonconvulsive_resolved_with_intervention"
    )
    PROLONGED_OVER_5_MIN = "prolonged_over_5_min"
    REPETITIVE_WITHOUT_RETURN_TO_BASELINE = "repetitive_without_return_to_baseline"


class MotorFinding(StrEnum):
    """ICANS motor domain (grading.md §3.5)."""

    NONE = "none"
    DEEP_FOCAL_WEAKNESS = "deep_focal_weakness"


class CerebralEdema(StrEnum):
    """ICANS raised intracranial pressure / cerebral oedema domain (grading.md §3.5)."""

    NONE = "none"
    FOCAL = "focal"
    DIFFUSE_OR_SIGNS = "diffuse_or_signs"
