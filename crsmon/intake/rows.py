"""What the intake hands to the repository: plain rows, already validated."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from crsmon.domain.plausibility import LIMITS


@dataclass(frozen=True, slots=True)
class RecordRow:
    """One clinical record to store (append-only)."""

    kind: str
    source_record_id: str
    occurred_at: datetime
    quantity: str | None = None
    value: float | None = None
    unit: str | None = None
    loinc: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    quality_flags: list[dict[str, str]] = field(default_factory=list)
    supersedes: str | None = None
    correction_reason: str | None = None
    key_suffix: str | None = None

    @property
    def key(self) -> str:
        """The stored ``source_record_id``: a vitals set is one row per value."""
        if self.key_suffix is None:
            return self.source_record_id
        return f"{self.source_record_id}#{self.key_suffix}"


@dataclass(frozen=True, slots=True)
class PatientRow:
    """An enrolment."""

    pseudonym: str
    birth_date: date | None
    age_years_at_infusion: float | None
    weight_kg: float | None
    care_unit: str
    disease_status: str | None
    marrow_blast_pct: float | None
    ldh_u_l: float | None
    product_name: str | None
    dose_cells_per_kg: float | None
    viability_pct: float | None
    infusion_at: datetime


def quality_flags(name: str, value: float) -> list[dict[str, str]]:
    """§4.4 flag column: a value to keep, grade and confirm."""
    limit = LIMITS[name]
    if not limit.flags(value):
        return []
    return [
        {
            "code": f"{name}_extreme",
            "field": name,
            "message": f"{name} is outside the usual range (§4.4): confirm it",
        }
    ]
