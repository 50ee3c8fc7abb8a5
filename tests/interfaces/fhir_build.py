"""FHIR R4 resources built for the tests (ours, not HL7's: the US Core examples
are in tests/data/fhir-us-core-examples and are sent unchanged)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

EXAMPLES = Path(__file__).parent.parent / "data" / "fhir-us-core-examples"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
VITAL_SIGNS = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "vital-signs",
        }
    ]
}


def example(name: str) -> dict[str, Any]:
    """One of HL7's US Core examples, unchanged."""
    content: dict[str, Any] = json.loads((EXAMPLES / f"{name}.json").read_text())
    return content


def quantity(value: float, code: str) -> dict[str, Any]:
    return {"value": value, "unit": code, "system": UCUM, "code": code}


def observation(
    ident: str,
    loinc: str,
    at: str,
    value: float | None = None,
    unit: str | None = None,
    *,
    status: str = "final",
    subject: str = "Patient/example",
    **extra: Any,
) -> dict[str, Any]:
    """A vital-signs Observation with an identifier (``urn:test|<ident>``)."""
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "identifier": [{"system": "urn:test", "value": ident}],
        "status": status,
        "category": [VITAL_SIGNS],
        "code": {"coding": [{"system": LOINC, "code": loinc}]},
        "subject": {"reference": subject},
        "effectiveDateTime": at,
    }
    if value is not None and unit is not None:
        resource["valueQuantity"] = quantity(value, unit)
    return resource | extra


def device(ident: str, at: str, text: str, **extra: Any) -> dict[str, Any]:
    """LOINC 107117-4, Method of oxygen delivery, answered by text."""
    return observation(
        ident, "107117-4", at, valueCodeableConcept={"text": text}, **extra
    )


def spo2_with_flow(ident: str, at: str, spo2: float, flow: float) -> dict[str, Any]:
    """US Core pulse oximetry: SpO2 with the inhaled O2 flow component 3151-8."""
    return observation(
        ident,
        "59408-5",
        at,
        spo2,
        "%",
        component=[
            {
                "code": {"coding": [{"system": LOINC, "code": "3151-8"}]},
                "valueQuantity": quantity(flow, "L/min"),
            }
        ],
    )


def blood_pressure(ident: str, at: str, sbp: float, dbp: float) -> dict[str, Any]:
    """The 85354-9 panel with its 8480-6 and 8462-4 components."""
    return observation(
        ident,
        "85354-9",
        at,
        component=[
            {
                "code": {"coding": [{"system": LOINC, "code": code}]},
                "valueQuantity": quantity(value, "mm[Hg]"),
            }
            for code, value in (("8480-6", sbp), ("8462-4", dbp))
        ],
    )


def administration(
    ident: str,
    rxnorm: str,
    *,
    status: str,
    start: str,
    end: str | None = None,
    rate: tuple[float, str] | None = None,
    subject: str = "Patient/example",
) -> dict[str, Any]:
    """A MedicationAdministration coded by RxNorm, with an effectivePeriod."""
    period = {"start": start} | ({} if end is None else {"end": end})
    resource: dict[str, Any] = {
        "resourceType": "MedicationAdministration",
        "identifier": [{"system": "urn:test", "value": ident}],
        "status": status,
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": rxnorm}]},
        "subject": {"reference": subject},
        "effectivePeriod": period,
    }
    if rate is not None:
        resource["dosage"] = {"rateQuantity": quantity(*rate)}
    return resource


def bundle(kind: str, *resources: dict[str, Any]) -> dict[str, Any]:
    """A Bundle of type batch or transaction that POSTs each resource."""
    return {
        "resourceType": "Bundle",
        "type": kind,
        "entry": [
            {
                "resource": r,
                "request": {"method": "POST", "url": r["resourceType"]},
            }
            for r in resources
        ],
    }
