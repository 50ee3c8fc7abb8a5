"""Plausibility limits for intake values (grading.md §4.4) [C: engineering limits].

*Reject* means physically impossible or a near-certain unit or entry error: the
value is refused at the edge and nothing is graded from it. *Flag* means possible
but extreme: the value is graded and a data-quality flag asks for confirmation.
CAR T patients really do reach extreme inflammatory labs, so labs are mostly
flagged, not rejected. This one table serves both the edge (reject) and the
grader (flag), so the two can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True, slots=True)
class Limit:
    """Reject and flag bounds of one quantity, in its canonical unit.

    ``reject_low_inclusive`` says whether a value *equal* to ``reject_below`` is
    rejected too (§4.4 writes "<= 0" for SBP but "< 0" for DBP).
    """

    unit: str
    reject_below: float | None = None
    reject_low_inclusive: bool = False
    reject_above: float | None = None
    flag_below: float | None = None
    flag_above: float | None = None
    note: str = ""

    def rejects(self, value: float) -> bool:
        """Whether ``value`` is outside the reject bounds."""
        if self.reject_below is not None and (
            value < self.reject_below
            or (self.reject_low_inclusive and value == self.reject_below)
        ):
            return True
        return self.reject_above is not None and value > self.reject_above

    def reject_reason(self) -> str:
        """Describe the accepted range, e.g. ``must be > 0 and <= 300 mm[Hg]``."""
        parts = []
        if self.reject_below is not None:
            op = ">" if self.reject_low_inclusive else ">="
            parts.append(f"{op} {self.reject_below:g}")
        if self.reject_above is not None:
            parts.append(f"<= {self.reject_above:g}")
        return f"must be {' and '.join(parts)} {self.unit}".rstrip()

    def flags(self, value: float) -> bool:
        """Whether ``value`` is extreme enough to ask for confirmation."""
        low = self.flag_below is not None and value < self.flag_below
        high = self.flag_above is not None and value > self.flag_above
        return low or high


LIMITS: MappingProxyType[str, Limit] = MappingProxyType(
    {
        "temperature_c": Limit(
            "Cel",
            reject_below=25,
            reject_above=45,
            flag_below=34,
            flag_above=41.5,
            note="86–113 with unit Cel is probably a mislabelled °F reading",
        ),
        "sbp_mmhg": Limit(
            "mm[Hg]",
            reject_below=0,
            reject_low_inclusive=True,
            reject_above=300,
            flag_below=50,
            flag_above=250,
            note="must also exceed DBP; infants (<1 y) are flagged below 40",
        ),
        "dbp_mmhg": Limit(
            "mm[Hg]", reject_below=0, reject_above=250, flag_below=20, flag_above=150
        ),
        "map_mmhg": Limit(
            "mm[Hg]",
            reject_below=0,
            reject_low_inclusive=True,
            reject_above=250,
            flag_below=40,
            flag_above=180,
        ),
        "heart_rate_per_min": Limit(
            "/min", reject_below=0, reject_above=350, flag_below=30, flag_above=220
        ),
        "respiratory_rate_per_min": Limit(
            "/min", reject_below=0, reject_above=150, flag_below=6, flag_above=60
        ),
        "spo2_pct": Limit(
            "%",
            reject_below=0,
            reject_above=100,
            flag_below=70,
            note="oximeters are unreliable below about 70 %",
        ),
        "fio2": Limit(
            "(a fraction: send 40 % as 0.4)", reject_below=0.21, reject_above=1.0
        ),
        "flow_l_min": Limit(
            "L/min",
            reject_below=0,
            reject_above=80,
            flag_above=15,
            note="flag applies to a conventional nasal cannula (probably HFNC)",
        ),
        "age_years": Limit("a", reject_below=0, reject_above=120),
        "weight_kg": Limit(
            "kg", reject_below=0.3, reject_low_inclusive=True, reject_above=400
        ),
        "crp_mg_l": Limit("mg/L", reject_below=0, flag_above=500),
        "ferritin_ug_l": Limit("ug/L", reject_below=0, flag_above=100_000),
        "il6_pg_ml": Limit("pg/mL", reject_below=0, flag_above=100_000),
        "ldh_u_l": Limit("U/L", reject_below=0, flag_above=20_000),
        "creatinine_mg_dl": Limit(
            "mg/dL",
            reject_below=0,
            reject_low_inclusive=True,
            reject_above=40,
            flag_above=15,
        ),
        "platelets_10e9_l": Limit(
            "10*9/L", reject_below=0, reject_above=3000, flag_above=1500
        ),
        "fibrinogen_mg_dl": Limit(
            "mg/dL", reject_below=0, reject_above=2000, flag_below=100, flag_above=1000
        ),
        "ast_u_l": Limit("U/L", reject_below=0, flag_above=10_000),
        "alt_u_l": Limit("U/L", reject_below=0, flag_above=10_000),
        "bilirubin_mg_dl": Limit("mg/dL", reject_below=0, flag_above=40),
    }
)
"""The §4.4 table, keyed by canonical field name."""

INFANT_SBP_FLAG_BELOW_MMHG = 40.0
"""§4.4: SBP below 40 is flagged in a child under one year (50 otherwise)."""
