"""Data-quality checks beside the grade (grading.md §4.4 flag column, A11).

An extreme or inconsistent value is graded as recorded and flagged for
confirmation; it is never dropped or corrected.
"""

from __future__ import annotations

from crsmon.domain.explain import Explanation, num
from crsmon.domain.plausibility import INFANT_SBP_FLAG_BELOW_MMHG, LIMITS
from crsmon.domain.snapshot import Assessment
from crsmon.domain.units import temperature_to_celsius
from crsmon.domain.vocab import OxygenDevice


def check_flow(
    device: OxygenDevice, flow: float | None, by_flow: bool, ex: Explanation
) -> None:
    """§4.4 flags and A11: a flow-graded device with no flow, implausible flows."""
    no_flow_devices = (OxygenDevice.NASAL_CANNULA, OxygenDevice.BLOW_BY)
    if flow is None and (by_flow or device in no_flow_devices):
        ex.lacks("oxygen.flow_l_min")
        ex.quality(
            "oxygen_flow_missing",
            f"{device} recorded with no flow; graded as the device alone",
            "oxygen.flow_l_min",
        )
        return
    if flow is None:
        return
    if flow == 0 and device is not OxygenDevice.ROOM_AIR:
        ex.quality(
            "oxygen_flow_zero",
            f"{device} recorded at 0 L/min: confirm whether oxygen is running "
            "(graded as the device)",
            "oxygen.flow_l_min",
        )
    limit = LIMITS["flow_l_min"]
    if device is OxygenDevice.NASAL_CANNULA and limit.flags(flow):
        ex.quality(
            "nasal_cannula_flow_high",
            f"nasal cannula at {num(flow)} L/min (> {limit.flag_above:g}) is "
            "probably a high-flow system; confirm the device",
            "oxygen.flow_l_min",
        )
    if device is OxygenDevice.ROOM_AIR and flow > 0:
        ex.quality(
            "room_air_with_flow",
            f"room air recorded with an oxygen flow of {num(flow)} L/min; confirm "
            "the device",
            "oxygen.flow_l_min",
        )


GRADED_PLAUSIBILITY_FIELDS = frozenset(
    {"temperature_c", "sbp_mmhg", "dbp_mmhg", "map_mmhg", "spo2_pct"}
)
"""Fields :func:`check_plausibility` judges in every graded snapshot (with age)."""


def check_plausibility(a: Assessment, ex: Explanation) -> None:
    """§4.4 flag column: grade from extreme values, and ask for confirmation."""
    values = {
        "temperature_c": a.temperature_c,
        "dbp_mmhg": a.dbp_mmhg,
        "map_mmhg": a.map_mmhg,
        "spo2_pct": a.spo2_pct,
    }
    if a.temperature_c is None and a.temperature_raw is not None:
        raw = a.temperature_raw
        values["temperature_c"] = temperature_to_celsius(raw.value, raw.unit)
    for name, value in values.items():
        limit = LIMITS[name]
        if value is not None and limit.flags(value):
            ex.quality(
                f"{name}_extreme",
                f"{name} {num(value)} is outside {_flag_range(name)}: confirm it "
                "(graded as recorded)",
                name,
            )
    _check_blood_pressure(a, ex)


def _flag_range(name: str) -> str:
    limit = LIMITS[name]
    low = "" if limit.flag_below is None else f">= {limit.flag_below:g}"
    high = "" if limit.flag_above is None else f"<= {limit.flag_above:g}"
    return " and ".join(p for p in (low, high) if p) + f" {limit.unit}"


def _check_blood_pressure(a: Assessment, ex: Explanation) -> None:
    sbp = a.sbp_mmhg
    if sbp is not None:
        limit = LIMITS["sbp_mmhg"]
        low = INFANT_SBP_FLAG_BELOW_MMHG if a.age_years < 1 else limit.flag_below
        if (low is not None and sbp < low) or (
            limit.flag_above is not None and sbp > limit.flag_above
        ):
            ex.quality(
                "sbp_mmhg_extreme",
                f"sbp_mmhg {num(sbp)} is extreme for age {num(a.age_years)} y: "
                "confirm it, artefact is common (graded as recorded)",
                "sbp_mmhg",
            )
    dbp, mean = a.dbp_mmhg, a.map_mmhg
    if sbp is None or dbp is None or mean is None:
        return
    if not dbp <= mean <= sbp:
        ex.quality(
            "map_mmhg_inconsistent",
            f"map_mmhg {num(mean)} is not between DBP {num(dbp)} "
            f"and SBP {num(sbp)}: check the readings",
            "map_mmhg",
        )
