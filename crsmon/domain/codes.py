"""LOINC codes and UCUM units of every measured quantity (grading.md §4.1–4.3).

Public code mislabels LOINC codes (grading.md §1.8), so each code lives here once,
with its status tag ([V] checked, [R] agreed by reproductions, [M] not re-checked),
and a test proves each code names exactly one quantity. ``accepted`` lists the
other codes a feed may send for the same concept (several methods or specimens);
``units`` maps each accepted UCUM unit to the factor that converts it to the
canonical unit. Temperature is the one affine conversion and is handled by
:mod:`crsmon.domain.units`.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

from crsmon.domain.records import Quantity


@dataclass(frozen=True, slots=True)
class QuantityCode:
    """The coding of one quantity: preferred LOINC, alternatives, units."""

    loinc: str
    status: str
    canonical_unit: str
    units: MappingProxyType[str, float]
    accepted: tuple[str, ...] = ()

    @property
    def all_codes(self) -> tuple[str, ...]:
        """The preferred code and every accepted alternative."""
        return (self.loinc, *self.accepted)


def _only(unit: str) -> MappingProxyType[str, float]:
    return MappingProxyType({unit: 1.0})


_MMHG = MappingProxyType({"mm[Hg]": 1.0, "kPa": 7.50062})

CODES: MappingProxyType[Quantity, QuantityCode] = MappingProxyType(
    {
        Quantity.TEMPERATURE_C: QuantityCode(
            "8310-5",
            "V",
            "Cel",
            MappingProxyType({"Cel": 1.0}),
            accepted=("8331-1", "8328-7", "8332-9", "8333-7"),
        ),
        Quantity.SBP_MMHG: QuantityCode("8480-6", "V", "mm[Hg]", _MMHG),
        Quantity.DBP_MMHG: QuantityCode("8462-4", "V", "mm[Hg]", _MMHG),
        Quantity.MAP_MMHG: QuantityCode("8478-0", "V", "mm[Hg]", _MMHG),
        Quantity.HEART_RATE_PER_MIN: QuantityCode("8867-4", "V", "/min", _only("/min")),
        Quantity.RESPIRATORY_RATE_PER_MIN: QuantityCode(
            "9279-1", "V", "/min", _only("/min")
        ),
        Quantity.SPO2_PCT: QuantityCode(
            "59408-5", "V", "%", _only("%"), accepted=("2708-6",)
        ),
        Quantity.CRP_MG_L: QuantityCode(
            "1988-5",
            "V",
            "mg/L",
            MappingProxyType({"mg/L": 1.0, "mg/dL": 10.0}),
            accepted=("30522-7",),
        ),
        Quantity.FERRITIN_UG_L: QuantityCode(
            "2276-4", "V", "ug/L", MappingProxyType({"ug/L": 1.0, "ng/mL": 1.0})
        ),
        Quantity.IL6_PG_ML: QuantityCode(
            "26881-3", "V", "pg/mL", MappingProxyType({"pg/mL": 1.0, "ng/L": 1.0})
        ),
        Quantity.LDH_U_L: QuantityCode(
            "2532-0", "V", "U/L", MappingProxyType({"U/L": 1.0, "ukat/L": 60.0})
        ),
        Quantity.CREATININE_MG_DL: QuantityCode(
            "2160-0",
            "V",
            "mg/dL",
            MappingProxyType({"mg/dL": 1.0, "umol/L": 1 / 88.4}),
            accepted=("14682-9", "38483-4", "77140-2"),
        ),
        Quantity.PLATELETS_10E9_L: QuantityCode(
            "777-3",
            "V",
            "10*9/L",
            MappingProxyType({"10*9/L": 1.0, "10*3/uL": 1.0, "/uL": 0.001}),
            accepted=("26515-7",),
        ),
        Quantity.FIBRINOGEN_MG_DL: QuantityCode(
            "3255-7", "V", "mg/dL", MappingProxyType({"mg/dL": 1.0, "g/L": 100.0})
        ),
        Quantity.AST_U_L: QuantityCode(
            "1920-8", "R", "U/L", MappingProxyType({"U/L": 1.0, "ukat/L": 60.0})
        ),
        Quantity.ALT_U_L: QuantityCode(
            "1742-6", "M", "U/L", MappingProxyType({"U/L": 1.0, "ukat/L": 60.0})
        ),
        Quantity.BILIRUBIN_MG_DL: QuantityCode(
            "1975-2",
            "R",
            "mg/dL",
            MappingProxyType({"mg/dL": 1.0, "umol/L": 1 / 17.1}),
            accepted=("14631-6",),
        ),
    }
)
"""Every measured quantity's coding (grading.md §4.1, §4.2, §4.3)."""
