"""Edge schemas for the neutral assessment and episode objects (grading.md §0.1, §0.2).

Strict: an unknown field, a wrong type (``"38.5"`` for a number, ``1`` for a
boolean), NaN or infinity, or a value in the reject column of the §4.4
plausibility table is an error that names the field and the reason. Nothing is
coerced or guessed. Valid input becomes frozen domain values via ``to_domain``.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    PlainValidator,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from crsmon.domain.snapshot import (
    Assessment,
    Episode,
    IcansFindings,
    MaskingDrug,
    OxygenSupport,
    Treatment,
    VasopressorInfusion,
)
from crsmon.domain.vocab import (
    CerebralEdema,
    Consciousness,
    MotorFinding,
    OxygenDevice,
    Seizure,
    TreatmentDrug,
    VasoactiveDrug,
    VasopressorDoseUnit,
)
from crsmon.schemas.common import (
    StrictModel,
    TemperatureRawIn,
    sbp_above_dbp,
    within,
)

MAX_T_HOURS = 87_600.0
"""Ten years, in hours: a time since infusion beyond this is an entry error."""

MAX_ID_CHARS = 200
MAX_VASOPRESSORS = 12
MAX_OBSERVATIONS = 10_000
MAX_TREATMENTS = 10_000


def _t_hours(value: float) -> float:
    if abs(value) > MAX_T_HOURS:
        raise ValueError(f"must be within ±{MAX_T_HOURS:g} h of the infusion")
    return value


THours = Annotated[float, AfterValidator(_t_hours)]
AgeYears = Annotated[float, within("age_years")]
Term = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]


class OxygenIn(StrictModel):
    """Oxygen support: device, flow in L/min, FiO2 as a fraction."""

    device: OxygenDevice
    flow_l_min: Annotated[float | None, within("flow_l_min")] = None
    fio2: Annotated[float | None, within("fio2")] = None

    def to_domain(self) -> OxygenSupport:
        return OxygenSupport(self.device, self.flow_l_min, self.fio2)


class VasopressorIn(StrictModel):
    """One vasoactive infusion running in the window."""

    drug: VasoactiveDrug
    dose: Annotated[float | None, Field(gt=0)] = None
    unit: VasopressorDoseUnit | None = None
    duration_h: Annotated[float | None, Field(ge=0, le=MAX_T_HOURS)] = None

    def to_domain(self) -> VasopressorInfusion:
        return VasopressorInfusion(self.drug, self.dose, self.unit, self.duration_h)


class IcansIn(StrictModel):
    """ICANS findings (grading.md §3.5); kept beside CRS, never graded into it."""

    ice_score: Annotated[int | None, Field(ge=0, le=10)] = None
    capd_score: Annotated[int | None, Field(ge=0, le=32)] = None
    developmental_delay: bool = False
    consciousness: Consciousness | None = None
    seizure: Seizure | None = None
    motor: MotorFinding | None = None
    cerebral_edema: CerebralEdema | None = None
    global_aphasia: bool | None = None
    attributable_to_other_cause: bool = False

    def to_domain(self) -> IcansFindings:
        return IcansFindings(**self.model_dump())


class _SnapshotFields(StrictModel):
    """Fields shared by a stand-alone assessment and an episode observation."""

    weight_kg: Annotated[float | None, within("weight_kg")] = None
    temperature_c: Annotated[float | None, within("temperature_c")] = None
    temperature_raw: TemperatureRawIn | None = None
    fever_attributable_to_other_cause: bool = False
    # DBP is declared before SBP so the SBP check (§4.4: reject SBP <= DBP) sees it.
    dbp_mmhg: Annotated[float | None, within("dbp_mmhg")] = None
    sbp_mmhg: Annotated[float | None, within("sbp_mmhg")] = None
    map_mmhg: Annotated[float | None, within("map_mmhg")] = None
    iv_fluid_bolus_for_hypotension: bool = False
    hypotension_assessed: bool | None = None
    vasopressors: Annotated[list[VasopressorIn], Field(max_length=MAX_VASOPRESSORS)] = (
        Field(default_factory=list)
    )
    hypotension_attributable_to_other_cause: bool = False
    oxygen: OxygenIn | None = None
    oxygen_for_comfort_only: bool = False
    hypoxia_attributable_to_other_cause: bool = False
    spo2_pct: Annotated[float | None, within("spo2_pct")] = None
    organ_toxicity_ctcae: Annotated[
        dict[Term, Annotated[int, Field(ge=0, le=5)]], Field(max_length=64)
    ] = Field(default_factory=dict)
    icans: IcansIn | None = None
    death: bool = False
    death_attributable_to_crs: bool | None = None

    _above_dbp = field_validator("sbp_mmhg")(sbp_above_dbp)

    @field_validator("death_attributable_to_crs")
    @classmethod
    def _only_with_death(cls, value: bool | None, info: ValidationInfo) -> bool | None:
        if value is not None and not info.data.get("death", False):
            raise ValueError("may be set only when death is true")
        return value

    def _domain_fields(self) -> dict[str, Any]:
        """The shared fields as domain values: nested parts via their ``to_domain``,
        lists as tuples, the CTCAE map as sorted pairs."""
        fields: dict[str, Any] = {}
        for name in _SnapshotFields.model_fields:
            value = getattr(self, name)
            if isinstance(value, BaseModel):
                value = value.to_domain()  # type: ignore[attr-defined]
            elif isinstance(value, list):
                value = tuple(item.to_domain() for item in value)
            elif isinstance(value, dict):
                value = tuple(sorted(value.items()))
            fields[name] = value
        return fields


LineIdValue = str | int | None


def read_line_id(value: object) -> LineIdValue:
    """A line's ``id``: a string of 1–200 characters or an integer (not a boolean).

    Raises:
        ValueError: any other value.
    """
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, str) and 0 < len(value) <= MAX_ID_CHARS:
        return value
    raise ValueError(
        f"must be a string of 1 to {MAX_ID_CHARS} characters or an integer"
    )


LineId = Annotated[LineIdValue, PlainValidator(read_line_id)]


class AssessmentIn(_SnapshotFields):
    """A stand-alone assessment line (grading.md §0.1), optionally with an ``id``."""

    id: LineId = None
    age_years: AgeYears
    t_hours: THours | None = None
    crs_established: bool = False
    antipyretic_or_anticytokine_given: bool = False

    def _masking_drugs(self) -> frozenset[MaskingDrug]:
        # §0.1: the drug was given after CRS onset; with CRS not yet established it
        # can only have come before onset (the premedication case of A3).
        if not self.antipyretic_or_anticytokine_given:
            return frozenset()
        if self.crs_established:
            return frozenset({MaskingDrug.SINCE_ONSET})
        return frozenset({MaskingDrug.BEFORE_ONSET})

    def to_domain(self) -> Assessment:
        return Assessment(
            age_years=self.age_years,
            t_hours=self.t_hours,
            crs_established=self.crs_established,
            masking_drugs=self._masking_drugs(),
            **self._domain_fields(),
        )


class EpisodeObservationIn(_SnapshotFields):
    """An observation inside an episode: ``t_hours`` required; the engine derives
    ``crs_established`` and ``antipyretic_or_anticytokine_given``, so they are not
    accepted here. ``age_years`` defaults to the episode's."""

    t_hours: THours
    age_years: AgeYears | None = None

    def to_domain(self, episode_age_years: float) -> Assessment:
        age = episode_age_years if self.age_years is None else self.age_years
        return Assessment(age_years=age, t_hours=self.t_hours, **self._domain_fields())


class TreatmentIn(StrictModel):
    """A fever-masking drug given at hours since infusion."""

    t_hours: THours
    drug: TreatmentDrug

    def to_domain(self) -> Treatment:
        return Treatment(self.t_hours, self.drug)


class EpisodeIn(StrictModel):
    """An episode object (grading.md §0.2)."""

    age_years: AgeYears
    treatments: Annotated[list[TreatmentIn], Field(max_length=MAX_TREATMENTS)] = Field(
        default_factory=list
    )
    observations: Annotated[
        list[EpisodeObservationIn], Field(min_length=1, max_length=MAX_OBSERVATIONS)
    ]

    def to_domain(self) -> Episode:
        return Episode(
            age_years=self.age_years,
            observations=tuple(o.to_domain(self.age_years) for o in self.observations),
            treatments=tuple(t.to_domain() for t in self.treatments),
        )


class EpisodeLineIn(StrictModel):
    """An episode line: ``{"id": ..., "episode": {...}}``."""

    id: LineId = None
    episode: EpisodeIn
