"""Building blocks shared by every edge schema (the grade CLI and the bedside feed).

One strict base config, one §4.4 reject check, one raw-temperature model and one
SBP-above-DBP check, so the CLI, ``crsmon ingest`` and the API refuse the same
values with the same words.
"""

from __future__ import annotations

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    ValidationInfo,
    field_validator,
)

from crsmon.domain.plausibility import LIMITS
from crsmon.domain.snapshot import TemperatureReading
from crsmon.domain.units import temperature_to_celsius
from crsmon.domain.vocab import TemperatureUnit


class StrictModel(BaseModel):
    """Unknown fields, coercion, NaN and infinity are all refused; values are frozen."""

    model_config = ConfigDict(
        extra="forbid", strict=True, frozen=True, allow_inf_nan=False
    )


def within(name: str) -> AfterValidator:
    """Reject a value outside the §4.4 reject bounds of ``name``."""
    limit = LIMITS[name]

    def check(value: float | None) -> float | None:
        if value is not None and limit.rejects(value):
            raise ValueError(f"{limit.reject_reason()} (plausibility limit, §4.4)")
        return value

    return AfterValidator(check)


def sbp_above_dbp(sbp: float | None, info: ValidationInfo) -> float | None:
    """§4.4: an SBP at or below the DBP is refused (declare DBP before SBP)."""
    dbp = info.data.get("dbp_mmhg")
    if sbp is not None and dbp is not None and sbp <= dbp:
        raise ValueError("must be greater than dbp_mmhg (plausibility limit, §4.4)")
    return sbp


class TemperatureRawIn(StrictModel):
    """A temperature as read, with its UCUM unit (Cel or [degF])."""

    unit: TemperatureUnit
    value: float

    @field_validator("value")
    @classmethod
    def _plausible(cls, value: float, info: ValidationInfo) -> float:
        unit = info.data.get("unit")
        limit = LIMITS["temperature_c"]
        if unit is not None and limit.rejects(temperature_to_celsius(value, unit)):
            raise ValueError(
                f"converted to Cel it {limit.reject_reason()} (plausibility, §4.4)"
            )
        return value

    def to_domain(self) -> TemperatureReading:
        """The reading as a domain value."""
        return TemperatureReading(self.value, self.unit)
