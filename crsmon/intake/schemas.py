"""The bedside feed: one strict Pydantic model per record kind (docs/feed-format.md).

Every record names its sender (``source_system``) and the sender's own id for it
(``source_record_id``): the pair is the idempotency key. Times are tz-aware
(naive times and epoch numbers are refused) and may not lie more than five
minutes in the future of the server clock, which the shell passes in as the
validation context ``{"now": datetime}``. Values outside the reject column of
grading.md §4.4 are refused; values in its flag column are kept with a
data-quality flag. Units are explicit in field names, or given as UCUM and
converted exactly as grading.md §4.3 says; the original value is kept.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from crsmon.domain.codes import CODES
from crsmon.domain.plausibility import LIMITS
from crsmon.domain.records import Finding, Quantity
from crsmon.domain.units import temperature_to_celsius
from crsmon.domain.vocab import (
    OxygenDevice,
    TreatmentDrug,
    VasoactiveDrug,
    VasopressorDoseUnit,
)
from crsmon.intake.rows import PatientRow, RecordRow, quality_flags
from crsmon.schemas.common import (
    StrictModel,
    TemperatureRawIn,
    sbp_above_dbp,
    within,
)

FUTURE_TOLERANCE = timedelta(minutes=5)
"""A clock a few minutes fast at the bedside is tolerated; more is an error."""
EARLIEST_TIME = datetime(1990, 1, 1, tzinfo=UTC)
"""A time before this is an entry error (a default or epoch-zero date, a lost
century), never a CAR T course. (1990, not 2000: HL7's own FHIR examples,
which the standard feeds must take, are dated 1999.) It also keeps every stored
time, and every look-back window the grader opens from it, far inside the
datetime range."""

KEY_PATTERN = r"^[A-Za-z0-9._:@/-]{1,128}$"
SYSTEM_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"
KEY_MAX_CHARS = 128
"""The width of ``clinical_records.source_record_id`` and of ``Key``."""
PRODUCT_NAME_MAX_CHARS = 120
"""The width of ``patients.product_name``."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_BUT_LINE_BREAKS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _no_control(pattern: re.Pattern[str], allowed: str) -> AfterValidator:
    """Refuse control characters (NUL above all: PostgreSQL text cannot hold it)."""

    def check(value: str) -> str:
        if pattern.search(value):
            raise ValueError(f"must not contain control characters{allowed}")
        return value

    return AfterValidator(check)


Key = Annotated[str, StringConstraints(pattern=KEY_PATTERN)]
System = Annotated[str, StringConstraints(pattern=SYSTEM_PATTERN)]
Pseudonym = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,64}$")]
FreeText = Annotated[
    str,
    StringConstraints(min_length=1, max_length=500),
    _no_control(_CONTROL_BUT_LINE_BREAKS, " (other than tab and line breaks)"),
]
"""Text a person wrote (a reason, a note): it may run over several lines."""

_ONE_LINE = _no_control(_CONTROL, "")
CareUnit = Annotated[str, StringConstraints(min_length=1, max_length=64), _ONE_LINE]
ProductName = Annotated[
    str, StringConstraints(min_length=1, max_length=PRODUCT_NAME_MAX_CHARS), _ONE_LINE
]
Clinician = Annotated[str, StringConstraints(min_length=1, max_length=120), _ONE_LINE]
DAYS_PER_YEAR = 365.25
"""As the state builder counts a birth date's age (crsmon.domain.state)."""


def _in_time_range(value: datetime, info: ValidationInfo) -> datetime:
    if value < EARLIEST_TIME:
        raise ValueError("is before 1990-01-01 (an entry error: a default date?)")
    now = (info.context or {}).get("now")
    if now is not None and value - now > FUTURE_TOLERANCE:
        raise ValueError("is more than 5 minutes in the future of the server clock")
    return value


Timestamp = Annotated[AwareDatetime, AfterValidator(_in_time_range)]


class _Record(StrictModel):
    source_system: System
    source_record_id: Key


class _PatientRecord(_Record):
    patient: Pseudonym
    supersedes: Key | None = None
    correction_reason: FreeText | None = None

    @model_validator(mode="after")
    def _correction_needs_reason(self) -> _PatientRecord:
        if (self.supersedes is None) != (self.correction_reason is None):
            raise ValueError(
                "correction_reason: a correction gives both supersedes and its reason"
            )
        return self

    def _row(self, kind: str, at: datetime, **fields: Any) -> RecordRow:
        return RecordRow(
            kind=kind,
            source_record_id=self.source_record_id,
            occurred_at=at,
            supersedes=self.supersedes,
            correction_reason=self.correction_reason,
            **fields,
        )


class ProductIn(BaseModel):
    """The CAR T product given at infusion."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    name: ProductName
    dose_cells_per_kg: Annotated[float, Field(gt=0, le=1e10)]
    viability_pct: Annotated[float, Field(ge=0, le=100)]


class PatientIn(_Record):
    """Enrolment: who (pseudonym only), age, weight, unit, disease and product."""

    kind: Literal["patient"]
    patient: Pseudonym
    birth_date: date | None = None
    age_years: Annotated[float | None, within("age_years")] = None
    weight_kg: Annotated[float | None, within("weight_kg")] = None
    care_unit: CareUnit
    disease_status: Literal["isolated_extramedullary", "hematologic"] | None = None
    marrow_blast_pct: Annotated[float | None, Field(ge=0, le=100)] = None
    ldh_u_l: Annotated[float | None, within("ldh_u_l")] = None
    product: ProductIn | None = None
    infusion_at: Timestamp

    @model_validator(mode="after")
    def _age_known(self) -> PatientIn:
        if self.birth_date is None and self.age_years is None:
            raise ValueError("age_years: give birth_date or age_years")
        born = self.birth_date
        if born is not None:
            days = (self.infusion_at.date() - born).days
            if LIMITS["age_years"].rejects(days / DAYS_PER_YEAR):
                raise ValueError(
                    "birth_date: must give an age at infusion_at "
                    f"{LIMITS['age_years'].reject_reason()} (plausibility limit, §4.4)"
                )
        return self

    def patient_row(self) -> PatientRow:
        """The patient's enrolment fields."""
        product = self.product
        return PatientRow(
            pseudonym=self.patient,
            birth_date=self.birth_date,
            age_years_at_infusion=self.age_years,
            weight_kg=self.weight_kg,
            care_unit=self.care_unit,
            disease_status=self.disease_status,
            marrow_blast_pct=self.marrow_blast_pct,
            ldh_u_l=self.ldh_u_l,
            product_name=None if product is None else product.name,
            dose_cells_per_kg=None if product is None else product.dose_cells_per_kg,
            viability_pct=None if product is None else product.viability_pct,
            infusion_at=self.infusion_at,
        )


_VITALS = (
    "temperature_c",
    "dbp_mmhg",
    "sbp_mmhg",
    "map_mmhg",
    "heart_rate_per_min",
    "respiratory_rate_per_min",
    "spo2_pct",
)
VITALS_KEY_MAX_CHARS = KEY_MAX_CHARS - max(len(f"#{name}") for name in _VITALS)
"""A vitals set's id leaves room for the ``#<field>`` of its rows' keys."""


class VitalsIn(_PatientRecord):
    """One vitals set: any of the vital signs, observed at one time."""

    kind: Literal["vitals"]
    observed_at: Timestamp
    temperature_c: Annotated[float | None, within("temperature_c")] = None
    temperature_raw: TemperatureRawIn | None = None
    dbp_mmhg: Annotated[float | None, within("dbp_mmhg")] = None
    sbp_mmhg: Annotated[float | None, within("sbp_mmhg")] = None
    map_mmhg: Annotated[float | None, within("map_mmhg")] = None
    heart_rate_per_min: Annotated[float | None, within("heart_rate_per_min")] = None
    respiratory_rate_per_min: Annotated[
        float | None, within("respiratory_rate_per_min")
    ] = None
    spo2_pct: Annotated[float | None, within("spo2_pct")] = None

    _above_dbp = field_validator("sbp_mmhg")(sbp_above_dbp)

    @field_validator("source_record_id")
    @classmethod
    def _room_for_the_field(cls, value: str) -> str:
        if len(value) > VITALS_KEY_MAX_CHARS:
            raise ValueError(
                f"at most {VITALS_KEY_MAX_CHARS} characters for a vitals record "
                "(each value is stored as <source_record_id>#<field>)"
            )
        return value

    @model_validator(mode="after")
    def _some_value(self) -> VitalsIn:
        if all(getattr(self, name) is None for name in _VITALS) and (
            self.temperature_raw is None
        ):
            raise ValueError("observed_at: a vitals record carries at least one value")
        return self

    def rows(self) -> list[RecordRow]:
        """One measurement row per value sent (keys ``<id>#<quantity>``)."""
        values = {name: getattr(self, name) for name in _VITALS}
        original: dict[str, Any] = {}
        raw = self.temperature_raw
        if values["temperature_c"] is None and raw is not None:
            values["temperature_c"] = temperature_to_celsius(raw.value, raw.unit)
            original = {"original_value": raw.value, "original_unit": str(raw.unit)}
        rows = []
        for name, value in values.items():
            if value is None:
                continue
            quantity = Quantity(name)
            code = CODES[quantity]
            rows.append(
                self._row(
                    "measurement",
                    self.observed_at,
                    key_suffix=name,
                    quantity=name,
                    value=value,
                    unit=code.canonical_unit,
                    loinc=code.loinc,
                    details=original if name == "temperature_c" else {},
                    quality_flags=quality_flags(name, value),
                )
            )
        return rows


class OxygenIn(_PatientRecord):
    """The oxygen support in use from ``observed_at`` on."""

    kind: Literal["oxygen"]
    observed_at: Timestamp
    device: OxygenDevice
    flow_l_min: Annotated[float | None, within("flow_l_min")] = None
    fio2: Annotated[float | None, within("fio2")] = None
    for_comfort_only: bool = False
    device_not_recorded: bool = False
    """The sender recorded a flow but no device (the standard feeds): the flow is
    graded as through a nasal cannula, and the row is flagged."""

    @model_validator(mode="after")
    def _assumed_device_is_a_cannula(self) -> OxygenIn:
        if self.device_not_recorded and (
            self.device != OxygenDevice.NASAL_CANNULA or self.flow_l_min is None
        ):
            raise ValueError(
                "device_not_recorded: only for a flow graded as a nasal cannula"
            )
        return self

    def rows(self) -> list[RecordRow]:
        """One oxygen row."""
        details = self.model_dump(
            mode="json", include={"device", "flow_l_min", "fio2", "for_comfort_only"}
        )
        flags = (
            [
                {
                    "code": "device_not_recorded",
                    "field": "device",
                    "message": "no oxygen device was recorded: the flow is graded "
                    "as through a nasal cannula",
                }
            ]
            if self.device_not_recorded
            else []
        )
        return [
            self._row("oxygen", self.observed_at, details=details, quality_flags=flags)
        ]


class VasopressorStartIn(_PatientRecord):
    """A vasoactive infusion started (it runs until a matching stop record)."""

    kind: Literal["vasopressor_start"]
    started_at: Timestamp
    drug: VasoactiveDrug
    dose: Annotated[float | None, Field(gt=0, le=1e5)] = None
    unit: VasopressorDoseUnit | None = None
    """ASTCT counts agents, not doses: an infusion whose rate was not recorded
    (a standard feed may send none) is still an infusion; dose and unit go
    together."""

    @model_validator(mode="after")
    def _dose_with_unit(self) -> VasopressorStartIn:
        if (self.dose is None) != (self.unit is None):
            raise ValueError("unit: a dose and its unit go together")
        return self

    def rows(self) -> list[RecordRow]:
        """One infusion-start row."""
        details = self.model_dump(mode="json", include={"drug", "dose", "unit"})
        return [self._row("vasopressor_start", self.started_at, details=details)]


class VasopressorStopIn(_PatientRecord):
    """The infusion started by ``start_record_id`` (same sender) stopped."""

    kind: Literal["vasopressor_stop"]
    stopped_at: Timestamp
    start_record_id: Key

    def rows(self) -> list[RecordRow]:
        """One infusion-stop row pointing at its start."""
        details = {"start_record_id": self.start_record_id}
        return [self._row("vasopressor_stop", self.stopped_at, details=details)]


class FluidBolusIn(_PatientRecord):
    """A fluid bolus; ``for_hypotension`` says whether it was for blood pressure."""

    kind: Literal["fluid_bolus"]
    given_at: Timestamp
    for_hypotension: bool
    volume_ml: Annotated[float | None, Field(gt=0, le=5000)] = None

    def rows(self) -> list[RecordRow]:
        """One bolus row."""
        details = self.model_dump(include={"for_hypotension", "volume_ml"})
        return [self._row("fluid_bolus", self.given_at, details=details)]


_ANALYTES = {
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
Analyte = Literal[
    "crp",
    "ferritin",
    "il6",
    "ldh",
    "creatinine",
    "platelets",
    "fibrinogen",
    "ast",
    "alt",
    "bilirubin",
]


class LabIn(_PatientRecord):
    """A laboratory result with its UCUM unit (and optionally its LOINC code)."""

    kind: Literal["lab"]
    observed_at: Timestamp
    analyte: Analyte
    value: float
    unit: Annotated[str, StringConstraints(min_length=1, max_length=24)]
    loinc: Annotated[str, StringConstraints(pattern=r"^\d{1,7}-\d$")] | None = None

    @model_validator(mode="after")
    def _known_unit_and_code(self) -> LabIn:
        code = CODES[_ANALYTES[self.analyte]]
        if self.unit not in code.units:
            raise ValueError(f"unit: must be one of {', '.join(code.units)}")
        if self.loinc is not None and self.loinc not in code.all_codes:
            raise ValueError(f"loinc: must be one of {', '.join(code.all_codes)}")
        limit = LIMITS[_ANALYTES[self.analyte].value]
        if limit.rejects(self.value * code.units[self.unit]):
            raise ValueError(f"value: {limit.reject_reason()} (plausibility, §4.4)")
        return self

    def rows(self) -> list[RecordRow]:
        """One measurement row in the canonical unit, keeping the original."""
        quantity = _ANALYTES[self.analyte]
        code = CODES[quantity]
        value = self.value * code.units[self.unit]
        return [
            self._row(
                "measurement",
                self.observed_at,
                quantity=quantity.value,
                value=value,
                unit=code.canonical_unit,
                loinc=self.loinc or code.loinc,
                details={"original_value": self.value, "original_unit": self.unit},
                quality_flags=quality_flags(quantity.value, value),
            )
        ]


class TreatmentIn(_PatientRecord):
    """A dose of an antipyretic, anti-cytokine drug or corticosteroid."""

    kind: Literal["treatment"]
    given_at: Timestamp
    drug: TreatmentDrug

    def rows(self) -> list[RecordRow]:
        """One treatment row."""
        return [self._row("treatment", self.given_at, details={"drug": str(self.drug)})]


class AttributionIn(_PatientRecord):
    """A clinician attributes fever, hypotension or hypoxia to another cause."""

    kind: Literal["attribution"]
    finding: Finding
    start_at: Timestamp
    end_at: Timestamp | None = None
    by: Clinician
    reason: FreeText

    def rows(self) -> list[RecordRow]:
        """One attribution row (who and why kept beside the finding)."""
        details = self.model_dump(
            mode="json", include={"finding", "end_at", "by", "reason"}
        )
        return [self._row("attribution", self.start_at, details=details)]


OutcomeEvent = Literal[
    "response",
    "no_response",
    "relapse",
    "death",
    "hsct",
    "new_therapy",
    "last_follow_up",
]
"""What an ``outcome`` record reports (docs/feed-format.md, ``outcome``)."""


class OutcomeIn(_PatientRecord):
    """A response or its absence, relapse, death (with cause), HSCT, new
    therapy or last follow-up."""

    kind: Literal["outcome"]
    at: Timestamp
    event: OutcomeEvent
    death_attributable_to_crs: bool | None = None
    mrd_negative: bool | None = None
    note: FreeText | None = None

    @model_validator(mode="after")
    def _fields_of_the_event(self) -> OutcomeIn:
        if self.death_attributable_to_crs is not None and self.event != "death":
            raise ValueError("death_attributable_to_crs: only with event death")
        if self.mrd_negative is not None and self.event != "response":
            raise ValueError("mrd_negative: only with event response")
        return self

    def rows(self) -> list[RecordRow]:
        """One outcome row."""
        details = self.model_dump(
            include={"event", "death_attributable_to_crs", "mrd_negative", "note"},
            exclude_none=True,
        )
        details.setdefault("death_attributable_to_crs", None)
        details.setdefault("note", None)
        return [self._row("outcome", self.at, details=details)]


class TransferIn(_PatientRecord):
    """The patient moves to ``care_unit`` (or, after a discharge, is readmitted)."""

    kind: Literal["transfer"]
    transferred_at: Timestamp
    care_unit: CareUnit

    def rows(self) -> list[RecordRow]:
        """One transfer row (the unit stays are rebuilt from these)."""
        details = {"care_unit": self.care_unit}
        return [self._row("transfer", self.transferred_at, details=details)]


class DischargeIn(_PatientRecord):
    """The patient leaves inpatient care (``destination``: where to, if known)."""

    kind: Literal["discharge"]
    discharged_at: Timestamp
    destination: Literal["home", "other_hospital", "hospice", "other"] | None = None

    def rows(self) -> list[RecordRow]:
        """One discharge row (it closes the open unit stay)."""
        details = {"destination": self.destination}
        return [self._row("discharge", self.discharged_at, details=details)]


class RetractionIn(_PatientRecord):
    """Entered in error: the record ``target_record_id`` (same sender) is retracted."""

    kind: Literal["retraction"]
    at: Timestamp
    target_record_id: Key
    reason: FreeText

    def rows(self) -> list[RecordRow]:
        """One retraction row."""
        details = {"target_record_id": self.target_record_id, "reason": self.reason}
        return [self._row("retraction", self.at, details=details)]


ClinicalIn = (
    VitalsIn
    | OxygenIn
    | VasopressorStartIn
    | VasopressorStopIn
    | FluidBolusIn
    | LabIn
    | TreatmentIn
    | AttributionIn
    | OutcomeIn
    | TransferIn
    | DischargeIn
    | RetractionIn
)
FeedRecord = Annotated[PatientIn | ClinicalIn, Field(discriminator="kind")]
"""Any record of the feed, told apart by ``kind``."""
