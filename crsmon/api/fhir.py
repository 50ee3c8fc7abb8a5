"""``/fhir``: FHIR R4 intake (Observation, MedicationAdministration, Bundle).

The same keys, roles and unit scoping as ``/v1/records`` (bedside keys).
Each resource is read by :mod:`crsmon.interfaces.fhir`, its records go
through the one intake path, and the resource is kept as an inbound item
(:mod:`crsmon.services.interfaces`). Replies are FHIR: an OperationOutcome
per resource whose issues name the element (FHIRPath) and say what became of
it; a Bundle of type batch answers entry by entry (``batch-response``); a
transaction is all or nothing at reading: if any entry cannot be read, nothing
is stored and the reply names every failing entry.

Submitted values are never echoed in replies; the kept payload has the
patient's name, narrative and references removed (the link is by keyed hash).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from crsmon.api.deps import ContextDep, JsonBody
from crsmon.api.intake import IntakeDep
from crsmon.api.schemas import ErrorBody
from crsmon.interfaces.codes import device_for
from crsmon.interfaces.fhir import (
    FhirError,
    parse_bundle,
    parse_resource,
    patient_refs,
    read_medication,
    read_observation,
)
from crsmon.interfaces.readings import Item, Note, pair_devices
from crsmon.schemas.jsonl import read_object
from crsmon.services.interfaces import Plan, Receipt, commit, prepare, receive

router = APIRouter(prefix="/fhir", tags=["fhir"])

FHIR_JSON = "application/fhir+json"
SOURCE_SYSTEM = "fhir"
CHANNEL = "fhir"
NOTE_SYSTEM = "urn:crsmon:note"
_ISSUE_TYPES = {
    "patient-unlinked": "not-found",
    "unit": "code-invalid",
    "unit-system": "code-invalid",
    "status": "code-invalid",
    "device-unmapped": "code-invalid",
    "code-conflict": "invalid",
    "no-time": "required",
    "no-value": "required",
    "no-end": "required",
    "duplicate": "duplicate",
}
_ANSWER = {
    201: "201 Created",
    200: "200 OK",
    400: "400 Bad Request",
    422: "422 Unprocessable Entity",
}
_OUTCOME_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "A FHIR R4 OperationOutcome: one issue per note, each naming "
    "the element (FHIRPath) it is about.",
    "properties": {"resourceType": {"const": "OperationOutcome"}},
}


def _issue(note: Note) -> dict[str, Any]:
    issue: dict[str, Any] = {
        "severity": note.severity,
        "code": _ISSUE_TYPES.get(
            note.code, "informational" if note.severity != "error" else "invalid"
        ),
        "details": {
            "coding": [{"system": NOTE_SYSTEM, "code": note.code}],
            "text": note.text,
        },
    }
    if note.element:
        issue["expression"] = [note.element]
    return issue


def outcome(notes: list[Note]) -> dict[str, Any]:
    """An OperationOutcome of ``notes`` (an informational one when empty)."""
    issues = [_issue(n) for n in notes] or [
        {"severity": "information", "code": "informational", "details": {"text": "ok"}}
    ]
    return {"resourceType": "OperationOutcome", "issue": issues}


def _status(receipt: Receipt) -> int:
    if receipt.duplicate:
        return 200
    if receipt.disposition == "refused":
        return 422
    return 201


def _summary(receipt: Receipt) -> list[Note]:
    what = {
        "graded": "stored and sent for grading",
        "not_graded": "kept, not graded (see the warnings)",
        "retraction": "retraction stored: the earlier version and its grades are "
        "withdrawn",
        "refused": "refused and kept for review",
    }[receipt.disposition]
    lead = Note("information", "received", "", what)
    return [lead, *receipt.notes] if not receipt.duplicate else receipt.notes


READ_TYPES = ("Observation", "MedicationAdministration")
_DEVICE_TEXT = "device-text"
"""A free text kept only when it names a device of the mapping table."""
_CODING = {"system": True, "code": True, "display": True}
_CONCEPT = {"coding": _CODING}
_DEVICE_CONCEPT = {"coding": _CODING, "text": _DEVICE_TEXT}
_QUANTITY = {"value": True, "comparator": True, "unit": True, "system": True,
             "code": True}  # fmt: skip
_PERIOD = {"start": True, "end": True}
_COMMON = {
    "resourceType": True,
    "id": True,
    "meta": {"versionId": True, "lastUpdated": True},
    "identifier": {"system": True, "value": True},
    "status": True,
}
_KEPT: dict[str, dict[str, Any]] = {
    "Observation": _COMMON
    | {
        "category": _CONCEPT,
        "code": _CONCEPT,
        "effectiveDateTime": True,
        "effectiveInstant": True,
        "effectivePeriod": _PERIOD,
        "issued": True,
        "valueQuantity": _QUANTITY,
        "valueCodeableConcept": _DEVICE_CONCEPT,
        "valueString": _DEVICE_TEXT,
        "dataAbsentReason": _CONCEPT,
        "component": {
            "code": _CONCEPT,
            "valueQuantity": _QUANTITY,
            "valueCodeableConcept": _DEVICE_CONCEPT,
            "valueString": _DEVICE_TEXT,
            "dataAbsentReason": _CONCEPT,
        },
    },
    "MedicationAdministration": _COMMON
    | {
        "medicationCodeableConcept": _CONCEPT,
        "medicationReference": {"reference": True},
        "contained": {"resourceType": True, "id": True, "code": _CONCEPT},
        "effectiveDateTime": True,
        "effectivePeriod": _PERIOD,
        "dosage": {"rateQuantity": _QUANTITY, "dose": _QUANTITY, "route": _CONCEPT},
    },
}
"""What is kept of a resource: the elements crsmon reads, nothing else (an
allowlist: narrative, notes, extensions, performer, encounter, focus and the
patient's own references may all name the patient, and are never kept)."""


def _allowed(value: Any, spec: Any) -> Any:
    if spec is True:
        return value if isinstance(value, str | int | float | bool) else None
    if spec == _DEVICE_TEXT:
        return value if isinstance(value, str) and device_for(value) else None
    if isinstance(value, list):
        kept = [_allowed(v, spec) for v in value]
        return [v for v in kept if v not in (None, {})] or None
    if not isinstance(value, dict):
        return None
    found = {k: _allowed(value[k], s) for k, s in spec.items() if k in value}
    return {k: v for k, v in found.items() if v not in (None, {}, [])}


def redacted(content: Any) -> dict[str, Any]:
    """The resource as kept: the elements crsmon reads only (``_KEPT``); a
    Bundle's entries likewise; a resource of another type (a Patient, say) is
    not kept at all."""
    if not isinstance(content, dict):
        return {"kept": "not a JSON object: not kept"}
    kind = content.get("resourceType")
    if kind == "Bundle":
        entries = content.get("entry")
        return {
            "resourceType": "Bundle",
            "type": str(content.get("type"))[:32],
            "entry": [
                {"resource": redacted(e.get("resource"))}
                if isinstance(e, dict)
                else redacted(e)
                for e in (entries if isinstance(entries, list) else [])
            ],
        }
    if not isinstance(kind, str) or kind not in _KEPT:
        return {"kept": "not a resource crsmon reads: not kept"}
    kept: dict[str, Any] = _allowed(content, _KEPT[kind])
    if isinstance(kept.get("contained"), list):
        # A contained Medication is kept (its code is what was given); any
        # other contained resource (a Patient, say) is not.
        kept["contained"] = [
            c for c in kept["contained"] if c.get("resourceType") == "Medication"
        ]
    if "subject" in content or "patient" in content:
        kept["subject"] = {"display": "(linked patient: reference not kept)"}
    return kept


def _read(resource: Any) -> Item:
    return (
        read_observation(resource)
        if resource.get_resource_type() == "Observation"
        else read_medication(resource)
    )


def _refused_item(kind: str, error: FhirError) -> Item:
    item = Item(kind, None, None)
    item.note("error", "structure", error.element, error.text)
    return item


def _fhir(status: int, body: dict[str, Any]) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=FHIR_JSON)


def _content(body: bytes) -> Any:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise FhirError("$", "not valid UTF-8 text") from None
    obj, problem = read_object(text)
    if problem is not None:
        where, _, why = problem.partition(": ")
        raise FhirError(where, why)
    return obj


def _payload(content: Any) -> str:
    return json.dumps(redacted(content), separators=(",", ":"))


def _keep(
    intake: Any, context: Any, item: Item, content: Any, refs: list[tuple[str, str]]
) -> Receipt:
    return receive(
        intake.sessions,
        item,
        refs=refs,
        content=content,
        payload=_payload(content),
        channel=CHANNEL,
        source_system=SOURCE_SYSTEM,
        pepper=context.settings.pepper(),
        actor=intake.actor,
        now=datetime.now(UTC),
    )


def _prepare(
    intake: Any, context: Any, item: Item, content: Any, refs: list[tuple[str, str]]
) -> Plan:
    return prepare(
        intake.sessions,
        item,
        refs=refs,
        content=content,
        channel=CHANNEL,
        source_system=SOURCE_SYSTEM,
        pepper=context.settings.pepper(),
        now=datetime.now(UTC),
    )


def _commit(intake: Any, plan: Plan, content: Any) -> Receipt:
    return commit(
        intake.sessions,
        plan,
        payload=_payload(content),
        channel=CHANNEL,
        source_system=SOURCE_SYSTEM,
        actor=intake.actor,
        now=datetime.now(UTC),
    )


def _one(body: bytes, intake: Any, context: Any, expected: str) -> JSONResponse:
    content: Any = None
    try:
        content = _content(body)
        resource = parse_resource(content)
        if resource.get_resource_type() != expected:
            raise FhirError("resourceType", f"must be {expected} at this address")
    except FhirError as exc:
        receipt = _keep(
            intake, context, _refused_item(expected, exc), content or {}, []
        )
        return _fhir(400, outcome(receipt.notes))
    item = _read(resource)
    receipt = _keep(intake, context, item, content, patient_refs(resource.subject))
    intake.notify(receipt.outcomes)
    return _fhir(_status(receipt), outcome(_summary(receipt)))


_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {
        "description": why,
        "content": {FHIR_JSON: {"schema": _OUTCOME_SCHEMA}},
    }
    for code, why in (
        (201, "Received: stored (graded or kept), as the issues say."),
        (200, "The same resource was received before: nothing new."),
        (400, "Not a FHIR resource crsmon reads (the element is named)."),
        (422, "Refused and kept for review (each reason with its element)."),
    )
}
_RESPONSES[415] = {
    "model": ErrorBody,
    "description": "Wrong content type (application/fhir+json or application/json).",
}
_BODY = {
    "requestBody": {
        "required": True,
        "content": {FHIR_JSON: {"schema": {"type": "object"}}},
    }
}


@router.post(
    "/Observation",
    status_code=201,
    responses=_RESPONSES,
    openapi_extra=_BODY,
    response_class=JSONResponse,
)
def post_observation(
    body: JsonBody, intake: IntakeDep, context: ContextDep
) -> JSONResponse:
    """One FHIR R4 Observation: vital signs, oxygen, labs (docs/interfaces.md)."""
    return _one(body, intake, context, "Observation")


@router.post(
    "/MedicationAdministration",
    status_code=201,
    responses=_RESPONSES,
    openapi_extra=_BODY,
    response_class=JSONResponse,
)
def post_medication(
    body: JsonBody, intake: IntakeDep, context: ContextDep
) -> JSONResponse:
    """One FHIR R4 MedicationAdministration: vasopressors and fever-masking drugs."""
    return _one(body, intake, context, "MedicationAdministration")


@router.post(
    "",
    status_code=200,
    responses={
        200: {
            "description": "A batch-response or transaction-response Bundle: one "
            "entry per entry sent, each with its status and OperationOutcome.",
            "content": {FHIR_JSON: {"schema": {"type": "object"}}},
        },
        400: _RESPONSES[400],
        415: _RESPONSES[415],
    },
    openapi_extra=_BODY,
    response_class=JSONResponse,
)
def post_bundle(body: JsonBody, intake: IntakeDep, context: ContextDep) -> JSONResponse:
    """A Bundle of type batch or transaction of Observations and
    MedicationAdministrations."""
    content: Any = None
    try:
        content = _content(body)
        bundle = parse_bundle(content)
    except FhirError as exc:
        receipt = _keep(
            intake, context, _refused_item("Bundle", exc), content or {}, []
        )
        return _fhir(400, outcome(receipt.notes))
    read: list[tuple[Item, Any, list[tuple[str, str]]] | FhirError] = []
    raws: list[Any] = []
    for n in range(len(bundle.entry or [])):
        raw = content["entry"][n].get("resource")
        raws.append(raw)
        try:
            if raw is None:
                raise FhirError("resource", "is required")
            resource = parse_resource(raw)
        except FhirError as exc:
            inner = exc.element.partition(".")[2] or exc.element
            read.append(FhirError(f"Bundle.entry[{n}].resource.{inner}", exc.text))
            continue
        read.append((_read(resource), raw, patient_refs(resource.subject)))
    failing = [r for r in read if isinstance(r, FhirError)]
    if bundle.type == "transaction":
        seen: dict[str, int] = {}
        for n, r in enumerate(read):
            if isinstance(r, FhirError) or r[0].identity is None:
                continue
            if r[0].identity in seen:
                failing.append(
                    FhirError(
                        f"Bundle.entry[{n}].resource",
                        f"the same resource as entry {seen[r[0].identity]}: a "
                        "transaction holds one version of each resource",
                    )
                )
            seen.setdefault(r[0].identity, n)
    if bundle.type == "transaction" and failing:
        return _transaction_refused(intake, context, content, failing)
    readable = [r for r in read if not isinstance(r, FhirError)]
    pair_devices([(r[0], r[2]) for r in readable])
    if bundle.type == "transaction":
        # All or nothing: every entry is read and checked before any is stored.
        plans = [_prepare(intake, context, *r) for r in readable]
        for n, plan in enumerate(plans):
            for note in plan.item.notes:
                if plan.refused and note.severity == "error":
                    inner = note.element.partition(".")[2] or note.element
                    where = f"Bundle.entry[{n}].resource" + (
                        f".{inner}" if inner else ""
                    )
                    failing.append(FhirError(where, note.text))
        if failing:
            return _transaction_refused(intake, context, content, failing)
    else:
        plans = []  # a batch: each entry on its own
    entries = []
    touched = []
    for n, r in enumerate(read):
        if isinstance(r, FhirError):
            kind = raws[n].get("resourceType") if isinstance(raws[n], dict) else None
            refused = _keep(
                intake,
                context,
                _refused_item(kind if kind in READ_TYPES else "unknown", r),
                raws[n] if isinstance(raws[n], dict) else {},
                [],
            )
            entries.append(_entry(400, outcome(refused.notes)))
            continue
        item, raw, refs = r
        receipt = (
            _commit(intake, plans[n], raw)
            if plans
            else _keep(intake, context, item, raw, refs)
        )
        touched += receipt.outcomes
        entries.append(_entry(_status(receipt), outcome(_summary(receipt))))
    intake.notify(touched)
    return _fhir(
        200,
        {
            "resourceType": "Bundle",
            "type": f"{bundle.type}-response",
            "entry": entries,
        },
    )


def _transaction_refused(
    intake: Any, context: Any, content: Any, failing: list[FhirError]
) -> JSONResponse:
    """A transaction with a failing entry: nothing stored, every failure named,
    the Bundle kept (refused) for review."""
    item = Item("Bundle", None, None)
    for error in failing:
        item.note("error", "structure", error.element, error.text)
    item.note(
        "error",
        "transaction",
        "Bundle",
        "a transaction is all or nothing: no entry was stored",
    )
    receipt = _keep(intake, context, item, content, [])
    return _fhir(400, outcome(receipt.notes))


def _entry(status: int, body: dict[str, Any]) -> dict[str, Any]:
    return {"response": {"status": _ANSWER[status], "outcome": body}}
