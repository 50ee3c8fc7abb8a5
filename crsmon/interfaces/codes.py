"""The standard feeds' terminology: which code means which crsmon concept.

One table per vocabulary, versioned with the code and tested (each code maps to
exactly one concept; docs/interfaces.md is checked against these tables):

- LOINC (FHIR ``Observation.code``, HL7 v2 OBX-3 with system ``LN``): the
  measured quantities come from :data:`crsmon.domain.codes.CODES`, so a LOINC
  code lives in one place only; oxygen flow, FiO2 and the oxygen delivery
  method are added here;
- IEEE 11073 MDC codes that bedside monitors send in OBX-3 (peers.md §2.3);
- UCUM units and the MDC_DIM_* unit names, each with its factor to the
  canonical unit (grading.md §4.3). An unknown unit for a known code is
  refused, never assumed;
- the oxygen delivery device (LOINC 107117-4 answers, which have no standard
  answer list: grading.md §4.1) by normalized text, to the ASTCT device
  vocabulary. An unknown device is refused, never guessed;
- RxNorm ingredient codes (and a few product codes rolled up to their
  ingredient) for vasopressors and the fever-masking drugs (peers.md §2.2).

A code crsmon does not use (body weight outside enrolment, a SNOMED device code
without text) is never guessed: the item is kept as not graded and the reply
says why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from crsmon.domain.codes import CODES
from crsmon.domain.records import Quantity
from crsmon.domain.vocab import OxygenDevice, TreatmentDrug, VasoactiveDrug
from crsmon.intake.schemas import Analyte

LOINC_SYSTEM = "http://loinc.org"
MDC_SYSTEM = "urn:iso:std:iso:11073:10101"
UCUM_SYSTEM = "http://unitsofmeasure.org"
RXNORM_SYSTEM = "http://www.nlm.nih.gov/research/umls/rxnorm"

Concept = (
    Literal[
        "temperature_c",
        "sbp_mmhg",
        "dbp_mmhg",
        "map_mmhg",
        "heart_rate_per_min",
        "respiratory_rate_per_min",
        "spo2_pct",
        "flow_l_min",
        "fio2",
        "device",
        "bp_panel",
    ]
    | Analyte
)
"""What a code means to crsmon: a vital sign (feed field name), an oxygen
setting, the blood-pressure panel, or a laboratory analyte (feed ``analyte``)."""

VITALS: frozenset[str] = frozenset(
    {
        "temperature_c",
        "sbp_mmhg",
        "dbp_mmhg",
        "map_mmhg",
        "heart_rate_per_min",
        "respiratory_rate_per_min",
        "spo2_pct",
    }
)
ANALYTES: MappingProxyType[str, Quantity] = MappingProxyType(
    {
        "crp": Quantity.CRP_MG_L,
        "ferritin": Quantity.FERRITIN_UG_L,
        "il6": Quantity.IL6_PG_ML,
        "ldh": Quantity.LDH_U_L,
        "creatinine": Quantity.CREATININE_MG_DL,
        "platelets": Quantity.PLATELETS_10E9_L,
        "fibrinogen": Quantity.FIBRINOGEN_MG_DL,
        "ast": Quantity.AST_U_L,
        "alt": Quantity.ALT_U_L,
        "bilirubin": Quantity.BILIRUBIN_MG_DL,
    }
)


def _loinc_table() -> dict[str, Concept]:
    table: dict[str, Concept] = {}
    names: dict[Quantity, Concept] = {
        Quantity.TEMPERATURE_C: "temperature_c",
        Quantity.SBP_MMHG: "sbp_mmhg",
        Quantity.DBP_MMHG: "dbp_mmhg",
        Quantity.MAP_MMHG: "map_mmhg",
        Quantity.HEART_RATE_PER_MIN: "heart_rate_per_min",
        Quantity.RESPIRATORY_RATE_PER_MIN: "respiratory_rate_per_min",
        Quantity.SPO2_PCT: "spo2_pct",
    }
    for analyte, quantity in ANALYTES.items():
        names[quantity] = analyte  # type: ignore[assignment]
    for quantity, concept in names.items():
        for code in CODES[quantity].all_codes:
            table[code] = concept
    table |= {
        "3151-8": "flow_l_min",  # Inhaled oxygen flow rate [V]
        "3150-0": "fio2",  # Inhaled oxygen concentration [V]
        "107117-4": "device",  # Method of oxygen delivery [V]
        "85354-9": "bp_panel",  # Blood pressure panel with all children optional
        "55284-4": "bp_panel",  # Blood pressure systolic and diastolic (STU3 era)
    }
    return table


LOINC: MappingProxyType[str, Concept] = MappingProxyType(_loinc_table())
"""LOINC code -> concept. Measured quantities come from ``CODES``."""

MDC: MappingProxyType[str, Concept] = MappingProxyType(
    {
        "150456": "spo2_pct",  # MDC_PULS_OXIM_SAT_O2
        "147842": "heart_rate_per_min",  # MDC_ECG_HEART_RATE
        "149530": "heart_rate_per_min",  # MDC_PULS_OXIM_PULS_RATE (pulse rate)
        "151562": "respiratory_rate_per_min",  # MDC_RESP_RATE
        "150344": "temperature_c",  # MDC_TEMP
        "150021": "sbp_mmhg",  # MDC_PRESS_BLD_NONINV_SYS
        "150022": "dbp_mmhg",  # MDC_PRESS_BLD_NONINV_DIA
        "150023": "map_mmhg",  # MDC_PRESS_BLD_NONINV_MEAN
        "150017": "sbp_mmhg",  # MDC_PRESS_BLD_SYS
        "150018": "dbp_mmhg",  # MDC_PRESS_BLD_DIA
    }
)
"""IEEE 11073-10101 codes monitors send (peers.md §2.3). Only codes the spec
names are mapped; others (150019, say) are reported as unmapped."""

MDC_NAMES: MappingProxyType[str, str] = MappingProxyType(
    {
        "MDC_PULS_OXIM_SAT_O2": "150456",
        "MDC_ECG_HEART_RATE": "147842",
        "MDC_PULS_OXIM_PULS_RATE": "149530",
        "MDC_RESP_RATE": "151562",
        "MDC_TEMP": "150344",
        "MDC_PRESS_BLD_NONINV_SYS": "150021",
        "MDC_PRESS_BLD_NONINV_DIA": "150022",
        "MDC_PRESS_BLD_NONINV_MEAN": "150023",
        "MDC_PRESS_BLD_SYS": "150017",
        "MDC_PRESS_BLD_DIA": "150018",
    }
)
"""The reference-id names of the same codes (OBX-3 may carry either)."""


@dataclass(frozen=True, slots=True)
class Unit:
    """One accepted unit of a concept: the canonical UCUM code it converts to,
    and how (``factor``, or Fahrenheit's affine conversion)."""

    canonical: str
    factor: float = 1.0
    fahrenheit: bool = False


_PER_MIN = {"/min": 1.0, "{beats}/min": 1.0, "{beat}/min": 1.0}
_MMHG = {"mm[Hg]": 1.0, "kPa": 7.50062}


def _vital_units() -> dict[str, dict[str, Unit]]:
    units: dict[str, dict[str, Unit]] = {
        "temperature_c": {
            "Cel": Unit("Cel"),
            "[degF]": Unit("Cel", fahrenheit=True),
        },
        "heart_rate_per_min": {u: Unit("/min", f) for u, f in _PER_MIN.items()},
        "respiratory_rate_per_min": {
            "/min": Unit("/min"),
            "{breaths}/min": Unit("/min"),
            "{breath}/min": Unit("/min"),
        },
        "spo2_pct": {"%": Unit("%")},
        "flow_l_min": {"L/min": Unit("L/min"), "mL/min": Unit("L/min", 0.001)},
        "fio2": {"%": Unit("1", 0.01), "1": Unit("1")},
    }
    for concept in ("sbp_mmhg", "dbp_mmhg", "map_mmhg"):
        units[concept] = {u: Unit("mm[Hg]", f) for u, f in _MMHG.items()}
    for analyte, quantity in ANALYTES.items():
        code = CODES[quantity]
        units[analyte] = {
            u: Unit(code.canonical_unit, f) for u, f in code.units.items()
        }
    return units


UNITS: MappingProxyType[str, MappingProxyType[str, Unit]] = MappingProxyType(
    {c: MappingProxyType(u) for c, u in _vital_units().items()}
)
"""Concept -> accepted UCUM unit -> conversion (grading.md §4.3)."""

MDC_UNITS: MappingProxyType[str, str] = MappingProxyType(
    {
        "MDC_DIM_PERCENT": "%",
        "MDC_DIM_DEGC": "Cel",
        "MDC_DIM_FAHR": "[degF]",
        "MDC_DIM_MMHG": "mm[Hg]",
        "MDC_DIM_KILO_PASCAL": "kPa",
        "MDC_DIM_BEAT_PER_MIN": "/min",
        "MDC_DIM_RESP_PER_MIN": "/min",
        "MDC_DIM_L_PER_MIN": "L/min",
    }
)
"""IEEE 11073 unit names (OBX-6 of monitor feeds) -> UCUM."""

UNIT_ALIASES: MappingProxyType[str, str] = MappingProxyType(
    {"mmHg": "mm[Hg]", "degC": "Cel", "degF": "[degF]", "bpm": "/min"}
)
"""Spellings seen in HL7 v2 OBX-6 without a coding system, read as UCUM."""


def _normal(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


_DEVICE_TEXT: dict[str, OxygenDevice] = {
    "room air": OxygenDevice.ROOM_AIR,
    "ra": OxygenDevice.ROOM_AIR,
    "none room air": OxygenDevice.ROOM_AIR,
    "nasal cannula": OxygenDevice.NASAL_CANNULA,
    "nasal canula": OxygenDevice.NASAL_CANNULA,
    "oxygen nasal cannula": OxygenDevice.NASAL_CANNULA,
    "nc": OxygenDevice.NASAL_CANNULA,
    "low flow nasal cannula": OxygenDevice.NASAL_CANNULA,
    "blow by": OxygenDevice.BLOW_BY,
    "high flow nasal cannula": OxygenDevice.HIGH_FLOW_NASAL_CANNULA,
    "high flow oxygen nasal cannula": OxygenDevice.HIGH_FLOW_NASAL_CANNULA,
    "heated humidified high flow nasal cannula": (OxygenDevice.HIGH_FLOW_NASAL_CANNULA),
    "hfnc": OxygenDevice.HIGH_FLOW_NASAL_CANNULA,
    "hfnc optiflow": OxygenDevice.HIGH_FLOW_NASAL_CANNULA,
    "simple face mask": OxygenDevice.SIMPLE_FACE_MASK,
    "simple mask": OxygenDevice.SIMPLE_FACE_MASK,
    "face mask": OxygenDevice.SIMPLE_FACE_MASK,
    "partial rebreather mask": OxygenDevice.PARTIAL_REBREATHER_MASK,
    "partial rebreathing mask": OxygenDevice.PARTIAL_REBREATHER_MASK,
    "non rebreather mask": OxygenDevice.NON_REBREATHER_MASK,
    "non rebreathing mask": OxygenDevice.NON_REBREATHER_MASK,
    "nonrebreather mask": OxygenDevice.NON_REBREATHER_MASK,
    "nrb": OxygenDevice.NON_REBREATHER_MASK,
    "venturi mask": OxygenDevice.VENTURI_MASK,
    "venturi": OxygenDevice.VENTURI_MASK,
    "tracheostomy collar": OxygenDevice.TRACHEOSTOMY_COLLAR,
    "trach collar": OxygenDevice.TRACHEOSTOMY_COLLAR,
    "cpap": OxygenDevice.CPAP,
    "continuous positive airway pressure": OxygenDevice.CPAP,
    "bipap": OxygenDevice.BIPAP,
    "bilevel positive airway pressure": OxygenDevice.BIPAP,
    "non invasive ventilation": OxygenDevice.BIPAP,
    "niv": OxygenDevice.BIPAP,
    "invasive mechanical ventilation": OxygenDevice.INVASIVE_MECHANICAL_VENTILATION,
    "mechanical ventilation": OxygenDevice.INVASIVE_MECHANICAL_VENTILATION,
    "ventilator": OxygenDevice.INVASIVE_MECHANICAL_VENTILATION,
    "endotracheal tube": OxygenDevice.INVASIVE_MECHANICAL_VENTILATION,
}
DEVICES: MappingProxyType[str, OxygenDevice] = MappingProxyType(
    {_normal(k): v for k, v in _DEVICE_TEXT.items()}
)
"""Normalized device text (lower case, punctuation to spaces) -> ASTCT device.
No standard answer list exists (grading.md §4.1): keep under clinical sign-off.
"NIV" is read as bilevel (the ASTCT row for BiPAP), never as CPAP."""


def device_for(text: str) -> OxygenDevice | None:
    """The ASTCT device a recorded text names, or None (never a guess)."""
    return DEVICES.get(_normal(text))


Drug = VasoactiveDrug | TreatmentDrug

RXNORM: MappingProxyType[str, Drug] = MappingProxyType(
    {
        "7512": VasoactiveDrug.NOREPINEPHRINE,
        "3992": VasoactiveDrug.EPINEPHRINE,
        "8163": VasoactiveDrug.PHENYLEPHRINE,
        "3628": VasoactiveDrug.DOPAMINE,
        "11149": VasoactiveDrug.VASOPRESSIN,
        "3616": VasoactiveDrug.DOBUTAMINE,
        "242969": VasoactiveDrug.NOREPINEPHRINE,  # product: 4 ML 1 MG/ML inj.
        "612865": TreatmentDrug.TOCILIZUMAB,  # third-party lists; see the doc
        "161": TreatmentDrug.ACETAMINOPHEN,
        "5640": TreatmentDrug.IBUPROFEN,
        "3264": TreatmentDrug.DEXAMETHASONE,
        "6902": TreatmentDrug.METHYLPREDNISOLONE,
        "5492": TreatmentDrug.HYDROCORTISONE,
        "8640": TreatmentDrug.PREDNISONE,
    }
)
"""RxNorm code -> drug: ingredients, and products rolled up to them (peers.md
§2.2). Dobutamine is an inotrope: it is stored as the feed's ``dobutamine``,
and whether it counts as a vasopressor is the rule set's decision (not counted
in ``astct-2019``), never the interface's."""


def markdown_tables() -> str:
    """The code tables as docs/interfaces.md shows them (test-checked)."""
    out = ["| LOINC | concept | accepted units (UCUM) -> canonical |", "|---|---|---|"]

    def units_of(concept: str) -> str:
        known = UNITS.get(concept)
        if known is None:
            return "(coded answer)" if concept == "device" else "(panel)"
        canonical = next(iter(known.values())).canonical
        shown = ", ".join(
            f"`{u}`"
            + (
                ""
                if k.factor == 1 and not k.fahrenheit
                else " (F to C)"
                if k.fahrenheit
                else f" x {k.factor:g}"
            )
            for u, k in known.items()
        )
        return f"{shown} -> `{canonical}`"

    for code, concept in sorted(LOINC.items(), key=lambda kv: (kv[1], kv[0])):
        out.append(f"| `{code}` | {concept} | {units_of(concept)} |")
    out += ["", "| MDC code | name | concept |", "|---|---|---|"]
    names = {v: k for k, v in MDC_NAMES.items()}
    for code, concept in MDC.items():
        out.append(f"| `{code}` | {names[code]} | {concept} |")
    out += ["", "| MDC unit | UCUM |", "|---|---|"]
    out += [f"| {name} | `{ucum}` |" for name, ucum in MDC_UNITS.items()]
    out += ["", "| device text (normalized) | ASTCT device |", "|---|---|"]
    out += [f"| {text} | {device} |" for text, device in sorted(DEVICES.items())]
    out += ["", "| RxNorm | drug |", "|---|---|"]
    out += [f"| `{code}` | {drug} |" for code, drug in RXNORM.items()]
    return "\n".join(out)
