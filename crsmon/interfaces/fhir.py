"""FHIR R4 resources in: Observation and MedicationAdministration, read with the
maintained ``fhir.resources`` models (its R4B package, which reads R4 JSON;
its default import is R5), never by walking dicts by hand.

Each resource becomes an :class:`~crsmon.interfaces.readings.Item`: values in
canonical units (:mod:`crsmon.interfaces.codes`), absent values with their
``dataAbsentReason``, the time with its precision, and notes that name the
element (FHIRPath) for the OperationOutcome the sender gets back.

Rules (peers.md §2.1, §2.2; grading.md §4):
- ``status`` final, amended, corrected: graded; preliminary, registered,
  unknown: kept, not graded; cancelled, entered-in-error: retract the earlier
  resource with the same identity and the grades derived from it (a
  MedicationAdministration ``not-done`` likewise; ``on-hold`` ends an
  infusion like ``stopped``);
- a value with a comparator is a bound, kept and not graded; a value together
  with a ``dataAbsentReason`` is refused (obs-6);
- a date-only (or coarser) ``effectiveDateTime`` is kept with its precision and
  never used for hourly grading; a time without a zone is refused by the
  models (FHIR requires the zone once there is a time);
- a code crsmon does not use is kept and reported, never guessed; an unknown
  unit for a known code is refused;
- the identity of a resource is its first identifier (``system|value``), else
  its logical id (``Observation/<id>``).

Pure: functions of their arguments.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Any

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.medicationadministration import MedicationAdministration
from fhir.resources.R4B.observation import Observation, ObservationComponent
from fhir.resources.R4B.quantity import Quantity as FhirQuantity
from fhir.resources.R4B.reference import Reference
from pydantic import ValidationError

from crsmon.domain.vocab import VasoactiveDrug, VasopressorDoseUnit
from crsmon.interfaces.codes import (
    LOINC,
    LOINC_SYSTEM,
    MDC,
    MDC_SYSTEM,
    RXNORM,
    RXNORM_SYSTEM,
    UCUM_SYSTEM,
    UNITS,
    Concept,
    Drug,
    device_for,
)
from crsmon.interfaces.readings import Administration, Item, Value, convert

GRADED = frozenset({"final", "amended", "corrected"})
HELD = frozenset({"preliminary", "registered", "unknown"})
RETRACTING = frozenset({"cancelled", "entered-in-error"})
OBSERVATION_STATUSES = GRADED | HELD | RETRACTING
MED_GIVEN = frozenset({"in-progress", "completed", "stopped", "on-hold"})
"""``on-hold``: an infusion suspended, read like ``stopped`` (its end required)."""
MED_HELD = frozenset({"unknown"})
MED_RETRACTING = frozenset({"entered-in-error", "not-done"})
"""``not-done``: never given, so an earlier version's records are withdrawn."""
MED_STATUSES = MED_GIVEN | MED_HELD | MED_RETRACTING

_SAFE = re.compile(r"^[A-Za-z0-9.\-_]{1,24}$")


def _shown(code: str | None) -> str:
    """A code echoed in a note only when it is plainly a code (never free text)."""
    return code if code is not None and _SAFE.match(code) else "(not shown)"


class FhirError(ValueError):
    """A body that is not a FHIR resource crsmon reads; ``element`` names where."""

    def __init__(self, element: str, text: str) -> None:
        super().__init__(f"{element}: {text}")
        self.element = element
        self.text = text


def parse_resource(content: Any) -> Observation | MedicationAdministration:
    """A FHIR JSON object as an R4 Observation or MedicationAdministration.

    Raises:
        FhirError: not an object, another resource type, or invalid (the first
            invalid element is named; submitted values are never echoed).
    """
    if not isinstance(content, dict):
        raise FhirError("$", "a FHIR resource is a JSON object")
    kind = content.get("resourceType")
    model: type[Observation] | type[MedicationAdministration]
    if kind == "Observation":
        model = Observation
    elif kind == "MedicationAdministration":
        model = MedicationAdministration
    else:
        raise FhirError(
            "resourceType", "must be Observation or MedicationAdministration"
        )
    resource: Observation | MedicationAdministration = _validated(model, content, kind)
    return resource


def parse_bundle(content: Any) -> Bundle:
    """A FHIR JSON object as a Bundle of type batch or transaction.

    Raises:
        FhirError: as :func:`parse_resource`.
    """
    if not isinstance(content, dict) or content.get("resourceType") != "Bundle":
        raise FhirError("resourceType", "must be Bundle")
    entries = content.get("entry", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise FhirError("Bundle.entry", "must be a list of objects")
    # The shell is validated here; each entry's resource on its own, so a
    # batch can answer entry by entry.
    shell = content | {
        "entry": [{k: v for k, v in e.items() if k != "resource"} for e in entries]
    }
    bundle: Bundle = _validated(Bundle, shell, "Bundle")
    if bundle.type not in ("batch", "transaction"):
        raise FhirError("Bundle.type", "must be batch or transaction")
    return bundle


def _validated(model: Any, content: dict[str, Any], kind: str) -> Any:
    try:
        return model.model_validate(content)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "$"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise FhirError(f"{kind}.{where}", message) from None


def identity(resource: Observation | MedicationAdministration) -> str | None:
    """``system|value`` of the first identifier, else ``<type>/<id>``."""
    for ident in resource.identifier or []:
        if ident.value:
            return f"{ident.system or ''}|{ident.value}"
    if resource.id:
        return f"{resource.get_resource_type()}/{resource.id}"
    return None


def patient_refs(subject: Reference | None) -> list[tuple[str, str]]:
    """The ways ``subject`` names its patient: ``("reference", "Patient/x")``
    and ``("identifier", "system|value")``, for the site's link table."""
    if subject is None:
        return []
    refs = []
    if subject.reference:
        refs.append(("reference", subject.reference))
    ident = subject.identifier
    if ident is not None and ident.value:
        refs.append(("identifier", f"{ident.system or ''}|{ident.value}"))
    return refs


def _time(item: Item, value: Any, element: str) -> None:
    if isinstance(value, datetime):
        item.at = value.astimezone(UTC)
        return
    item.precision = "day" if isinstance(value, date) else "month-or-year"
    if isinstance(value, date):
        item.at = datetime(value.year, value.month, value.day, tzinfo=UTC)
    item.hold(
        "date-only",
        element,
        "a date without a time of day is kept with its precision and not used "
        "for hourly grading",
    )


def _status(item: Item, status: str | None) -> None:
    if status in RETRACTING:
        item.action = "retract"
    elif status in HELD:
        item.hold(
            "status-not-graded",
            "Observation.status",
            "a preliminary (or registered, unknown) result is kept and flagged, "
            "not graded",
        )
    elif status not in GRADED:
        item.note("error", "status", "Observation.status", "not an R4 status code")


def _concepts(code: CodeableConcept | None) -> tuple[set[Concept], list[str]]:
    concepts: set[Concept] = set()
    unknown = []
    for coding in [] if code is None else code.coding or []:
        table = {LOINC_SYSTEM: LOINC, MDC_SYSTEM: MDC}.get(coding.system or "")
        found = None if table is None else table.get(coding.code or "")
        if found is None:
            unknown.append(f"{_shown(coding.system)}|{_shown(coding.code)}")
        else:
            concepts.add(found)
    return concepts, unknown


def _quantity(
    item: Item, concept: Concept, quantity: FhirQuantity | None, element: str
) -> Value | None:
    if quantity is None or quantity.value is None:
        return None
    if quantity.comparator is not None:
        item.hold(
            "comparator",
            f"{element}.comparator",
            "a value with a comparator (<, <=, >=, >) is a bound, not a "
            "measurement: kept, not graded",
        )
        return None
    unit = quantity.code if quantity.code else quantity.unit
    if quantity.code and quantity.system not in (None, UCUM_SYSTEM):
        item.note(
            "error", "unit-system", f"{element}.system", "units must be UCUM codes"
        )
        return None
    sent = float(quantity.value)
    value = None if unit is None else convert(concept, sent, unit)
    if value is None:
        accepted = ", ".join(UNITS.get(concept) or ())
        item.note(
            "error",
            "unit",
            f"{element}.code",
            f"not a unit crsmon accepts for {concept} (accepted: {accepted}); "
            "refused, never assumed",
        )
        return None
    return Value(concept, element, value, sent, unit)


def _absent(concept: Concept, reason: CodeableConcept | None, element: str) -> Value:
    code = None
    if reason is not None:
        codes = [c.code for c in reason.coding or [] if c.code]
        code = codes[0] if codes else (reason.text or "absent")
    return Value(concept, element, absent_reason=_shown(code))


def _device(
    item: Item, element: str, concept: CodeableConcept | None, text: str | None
) -> None:
    candidates = [text] if text else []
    if concept is not None:
        candidates += [concept.text or ""]
        candidates += [c.display or "" for c in concept.coding or []]
    for candidate in candidates:
        device = device_for(candidate) if candidate else None
        if device is not None:
            item.values.append(Value("device", element, device=device))
            return
    item.note(
        "error",
        "device-unmapped",
        element,
        "an oxygen delivery device crsmon's mapping table does not name: "
        "refused, never guessed (see docs/interfaces.md)",
    )


_VALUE_FIELDS = (
    "valueQuantity", "valueCodeableConcept", "valueString", "valueBoolean",
    "valueInteger", "valueRange", "valueRatio", "valueSampledData", "valueTime",
    "valueDateTime", "valuePeriod",
)  # fmt: skip


def _has_value(element: Observation | ObservationComponent) -> bool:
    return any(getattr(element, name, None) is not None for name in _VALUE_FIELDS)


def _component(item: Item, n: int, component: ObservationComponent) -> None:
    element = f"Observation.component[{n}]"
    concepts, _ = _concepts(component.code)
    if len(concepts) != 1:
        item.note(
            "warning",
            "component-unmapped",
            f"{element}.code",
            "a component crsmon does not use: kept, not graded",
        )
        return
    concept = next(iter(concepts))
    if concept == "device":
        _device(
            item,
            f"{element}.value",
            component.valueCodeableConcept,
            component.valueString,
        )
        return
    if component.dataAbsentReason is not None:
        if _has_value(component):
            item.note(
                "error",
                "value-and-absent",
                element,
                "a value and a dataAbsentReason together (FHIR obs-6): refused, "
                "neither is guessed",
            )
            return
        item.values.append(
            _absent(concept, component.dataAbsentReason, f"{element}.dataAbsentReason")
        )
        return
    value = _quantity(
        item, concept, component.valueQuantity, f"{element}.valueQuantity"
    )
    if value is not None:
        item.values.append(value)
    elif component.valueQuantity is None:
        item.note(
            "warning",
            "no-value",
            element,
            "a component with neither a value nor a dataAbsentReason: nothing read",
        )


def read_observation(obs: Observation) -> Item:
    """One Observation, read (see the module's rules)."""
    item = Item("Observation", identity(obs), obs.status)
    _status(item, obs.status)
    if obs.effectiveDateTime is not None:
        _time(item, obs.effectiveDateTime, "Observation.effectiveDateTime")
    elif obs.effectiveInstant is not None:
        _time(item, obs.effectiveInstant, "Observation.effectiveInstant")
    elif obs.effectivePeriod is not None and obs.effectivePeriod.start is not None:
        _time(item, obs.effectivePeriod.start, "Observation.effectivePeriod.start")
    elif item.action != "retract":
        item.note("error", "no-time", "Observation.effective[x]", "a time is required")
    if item.action == "retract":
        return item  # a retraction needs only the identity of what it retracts
    concepts, unknown = _concepts(obs.code)
    if len(concepts) > 1:
        item.note(
            "error",
            "code-conflict",
            "Observation.code",
            "its codings name different concepts",
        )
        return item
    if not concepts:
        item.hold(
            "code-unmapped",
            "Observation.code",
            f"a code crsmon does not use ({', '.join(unknown) or 'none'}): kept, "
            "reported, not graded",
        )
        return item
    concept = next(iter(concepts))
    if concept == "device":
        _device(item, "Observation.value", obs.valueCodeableConcept, obs.valueString)
    elif concept != "bp_panel":
        if obs.dataAbsentReason is not None and _has_value(obs):
            item.note(
                "error",
                "value-and-absent",
                "Observation.dataAbsentReason",
                "a value and a dataAbsentReason together (FHIR obs-6): refused, "
                "neither is guessed",
            )
        elif obs.dataAbsentReason is not None:
            item.values.append(
                _absent(concept, obs.dataAbsentReason, "Observation.dataAbsentReason")
            )
        else:
            value = _quantity(
                item, concept, obs.valueQuantity, "Observation.valueQuantity"
            )
            if value is not None:
                item.values.append(value)
            elif obs.valueQuantity is None and not obs.component:
                item.note(
                    "error",
                    "no-value",
                    "Observation.value[x]",
                    "neither a valueQuantity nor a dataAbsentReason",
                )
    for n, component in enumerate(obs.component or []):
        _component(item, n, component)
    for v in item.values:
        if v.absent_reason is not None:
            item.note(
                "information",
                "absent",
                v.element,
                f"{v.concept} recorded as absent ({v.absent_reason}): stored as "
                "absent, never as a value",
            )
    return item


def _drug(item: Item, med: MedicationAdministration) -> Drug | None:
    concept = med.medicationCodeableConcept
    element = "MedicationAdministration.medicationCodeableConcept"
    ref = med.medicationReference
    if concept is None and ref is not None and (ref.reference or "").startswith("#"):
        element = "MedicationAdministration.contained.code"
        for contained in med.contained or []:
            if f"#{contained.id}" == ref.reference:
                concept = getattr(contained, "code", None)
    codes = [
        c.code
        for c in ([] if concept is None else concept.coding or [])
        if c.system == RXNORM_SYSTEM and c.code in RXNORM
    ]
    drugs = {RXNORM[c] for c in codes if c is not None}
    if len(drugs) == 1:
        return next(iter(drugs))
    item.hold(
        "drug-unmapped",
        element,
        "not an RxNorm code crsmon maps (vasopressors, tocilizumab, "
        "corticosteroids, antipyretics): kept, reported, not graded",
    )
    return None


def _dose(item: Item, med: MedicationAdministration) -> tuple[float | None, str | None]:
    dosage = med.dosage
    rate = None if dosage is None else dosage.rateQuantity
    if rate is None or rate.value is None:
        return None, None
    unit = rate.code or rate.unit or ""
    if unit in set(VasopressorDoseUnit):
        return float(rate.value), unit
    item.note(
        "warning",
        "dose-unit",
        "MedicationAdministration.dosage.rateQuantity.code",
        "a rate unit crsmon does not name: the infusion is graded (ASTCT counts "
        "agents), its dose is not kept",
    )
    return None, None


def read_medication(med: MedicationAdministration) -> Item:
    """One MedicationAdministration, read: a vasopressor infusion (in-progress
    with an open period runs; completed or stopped with an end stops), or a
    dose of tocilizumab, a corticosteroid or an antipyretic."""
    item = Item("MedicationAdministration", identity(med), med.status)
    if med.status in MED_RETRACTING:
        item.action = "retract"
        return item
    if med.status in MED_HELD:
        item.hold(
            "status-not-graded",
            "MedicationAdministration.status",
            "status unknown: kept, not graded",
        )
    elif med.status not in MED_GIVEN:
        item.note(
            "error", "status", "MedicationAdministration.status", "not an R4 status"
        )
    period = med.effectivePeriod
    start = med.effectiveDateTime if period is None else period.start
    end = None if period is None else period.end
    if start is None:
        item.note(
            "error",
            "no-time",
            "MedicationAdministration.effective[x]",
            "a start is required",
        )
        return item
    _time(item, start, "MedicationAdministration.effective[x]")
    drug = _drug(item, med)
    if drug is None or item.action != "grade" or item.at is None:
        return item
    stopped = None
    if isinstance(drug, VasoactiveDrug):
        if period is None:
            item.hold(
                "no-period",
                "MedicationAdministration.effectiveDateTime",
                "a vasopressor needs an effectivePeriod (an infusion with a start) "
                "to be graded: kept, not graded",
            )
            return item
        if med.status == "in-progress" and end is not None:
            item.note(
                "warning",
                "period-end",
                "MedicationAdministration.effectivePeriod.end",
                "in progress with an end: read as stopped at the end",
            )
        if med.status in ("completed", "stopped", "on-hold") and not isinstance(
            end, datetime
        ):
            item.note(
                "error",
                "no-end",
                "MedicationAdministration.effectivePeriod.end",
                "a completed, stopped or on-hold infusion needs its end time",
            )
            return item
        if isinstance(end, datetime):
            stopped = end.astimezone(UTC)
            if stopped < item.at:
                item.note(
                    "error",
                    "end-before-start",
                    "MedicationAdministration.effectivePeriod.end",
                    "the infusion ends before it starts: refused, never guessed",
                )
                return item
    dose, unit = _dose(item, med) if isinstance(drug, VasoactiveDrug) else (None, None)
    item.administration = Administration(drug, item.at, stopped, dose, unit)
    return item
