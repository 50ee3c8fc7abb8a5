"""What a standard message says, in crsmon's terms, and the feed records it makes.

FHIR and HL7 v2 readers (:mod:`crsmon.interfaces.fhir`,
:mod:`crsmon.interfaces.hl7v2`) each turn one resource, or one OBX group, into
an :class:`Item`: the values it carries in canonical units (absent values kept
as absent, with their reason), its time and that time's precision, its status,
and notes for the sender. :func:`feed_records` then writes the records of the
bedside feed (docs/feed-format.md) that go through the one intake path that
every other channel uses: strict validation, stored once, refusals quarantined.

Pure: functions of their arguments, no I/O, no clock.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from crsmon.domain.vocab import OxygenDevice, VasoactiveDrug
from crsmon.interfaces.codes import ANALYTES, UNITS, VITALS, Concept, Drug

Severity = Literal["information", "warning", "error"]
Action = Literal["grade", "hold", "retract", "refuse"]
"""``grade``: values become feed records; ``hold``: kept, not graded
(preliminary, date-only, unmapped); ``retract``: entered in error or
cancelled; ``refuse``: nothing usable (the reasons say why)."""


@dataclass(frozen=True, slots=True)
class Note:
    """One thing the sender should know, naming the element it is about."""

    severity: Severity
    code: str
    element: str
    text: str

    def as_dict(self) -> dict[str, str]:
        """JSON-ready."""
        return {
            "severity": self.severity,
            "code": self.code,
            "element": self.element,
            "text": self.text,
        }


@dataclass(frozen=True, slots=True)
class Value:
    """One value read: its concept, canonical value and what was sent."""

    concept: Concept
    element: str
    value: float | None = None
    original_value: float | None = None
    original_unit: str | None = None
    absent_reason: str | None = None
    device: OxygenDevice | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (kept with the inbound item, graded or not)."""
        found: dict[str, Any] = {"concept": self.concept, "element": self.element}
        if self.absent_reason is not None:
            found["absent"] = self.absent_reason
        if self.value is not None:
            found["value"] = self.value
        if self.original_unit is not None:
            found |= {"sent": self.original_value, "unit": self.original_unit}
        if self.device is not None:
            found["device"] = str(self.device)
        return found


@dataclass(frozen=True, slots=True)
class Administration:
    """A drug given: an infusion running, stopped, or a dose at a time."""

    drug: Drug
    started_at: datetime
    stopped_at: datetime | None = None
    dose: float | None = None
    dose_unit: str | None = None


@dataclass(slots=True)
class Item:
    """One resource or OBX group, read."""

    resource_type: str
    identity: str | None
    status: str | None
    action: Action = "grade"
    at: datetime | None = None
    precision: str = "instant"
    values: list[Value] = field(default_factory=list)
    administration: Administration | None = None
    notes: list[Note] = field(default_factory=list)
    key_parts: tuple[str, ...] = ()
    """What names the observation when the sender gives it no identifier (HL7
    v2: code, sub-id, time); the service turns it into a keyed identity."""

    def note(self, severity: Severity, code: str, element: str, text: str) -> None:
        """Add a note; an error note makes the item refused."""
        self.notes.append(Note(severity, code, element, text))
        if severity == "error":
            self.action = "refuse"

    def hold(self, code: str, element: str, text: str) -> None:
        """Keep the item without grading it (unless it is already refused)."""
        self.notes.append(Note("warning", code, element, text))
        if self.action == "grade":
            self.action = "hold"

    def values_dict(self) -> dict[str, Any]:
        """What was read, for the inbound item."""
        found: dict[str, Any] = {
            "at": None if self.at is None else self.at.isoformat(),
            "precision": self.precision,
            "values": [v.as_dict() for v in self.values],
        }
        given = self.administration
        if given is not None:
            found["administration"] = {
                "drug": str(given.drug),
                "started_at": given.started_at.isoformat(),
                "stopped_at": None
                if given.stopped_at is None
                else given.stopped_at.isoformat(),
                "dose": given.dose,
                "dose_unit": given.dose_unit,
            }
        return found


_KEY_CHARS = re.compile(r"[^A-Za-z0-9._:@/-]")
BASE_MAX_CHARS = 80
"""Room left in a vitals key (103) for ``@<hash>`` and a kind suffix."""


def content_digest(content: Any) -> str:
    """SHA-256 of the canonical JSON of what was sent."""
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def record_key(identity: str | None, digest: str) -> str:
    """The feed key of an item's records: its identity (made key-safe, or
    hashed when long) and the content's short hash, so the same content sent
    again is a duplicate and an amended version is a new record."""
    if identity is None:
        return f"c-{digest[:32]}"
    base = _KEY_CHARS.sub("_", identity)
    if len(base) > BASE_MAX_CHARS or base != identity:
        base = "h-" + hashlib.sha256(identity.encode("utf-8")).hexdigest()[:32]
    return f"{base}@{digest[:12]}"


def _vitals(item: Item, common: dict[str, Any], key: str) -> list[dict[str, Any]]:
    fields: dict[str, Any] = {}
    for v in item.values:
        if v.concept not in VITALS or v.value is None:
            continue
        if v.concept == "temperature_c" and v.original_unit == "[degF]":
            fields["temperature_raw"] = {"value": v.original_value, "unit": "[degF]"}
        else:
            fields[v.concept] = v.value
    if not fields:
        return []
    return [
        common
        | {"kind": "vitals", "source_record_id": key, "observed_at": _iso(item)}
        | fields
    ]


def _oxygen(
    item: Item,
    common: dict[str, Any],
    key: str,
    current_device: OxygenDevice | None = None,
) -> list[dict[str, Any]]:
    found = {v.concept: v for v in item.values if v.absent_reason is None}
    device = found.get("device")
    flow = found.get("flow_l_min")
    fio2 = found.get("fio2")
    if device is None and flow is None:
        if fio2 is not None:
            item.note(
                "warning",
                "fio2-without-device",
                fio2.element,
                "an FiO2 with neither a device nor a flow is kept, not graded",
            )
        return []
    record: dict[str, Any] = common | {
        "kind": "oxygen",
        "source_record_id": f"{key}.o2",
        "observed_at": _iso(item),
    }
    if device is not None and device.device is not None:
        record["device"] = str(device.device)
    elif flow is not None and flow.value == 0:
        # No oxygen flowing and no device: room air, never a cannula at 0 L/min.
        item.note(
            "information",
            "flow-zero",
            flow.element,
            "an oxygen flow of 0 L/min with no device recorded is read as room air",
        )
        return [record | {"device": str(OxygenDevice.ROOM_AIR)}]
    elif current_device is not None:
        record["device"] = str(current_device)
        item.note(
            "information",
            "device-current",
            "" if flow is None else flow.element,
            f"no device in this resource: the flow is graded with the {current_device} "
            "recorded for the patient before it (still current)",
        )
    else:
        record["device"] = str(OxygenDevice.NASAL_CANNULA)
        record["device_not_recorded"] = True
        item.note(
            "warning",
            "device-not-recorded",
            "" if flow is None else flow.element,
            "oxygen flow with no delivery device recorded: graded by flow as a "
            "nasal cannula (device not recorded)",
        )
    if flow is not None:
        record["flow_l_min"] = flow.value
    if fio2 is not None:
        record["fio2"] = fio2.value
    return [record]


def _labs(item: Item, common: dict[str, Any], key: str) -> list[dict[str, Any]]:
    records = []
    for v in item.values:
        if v.concept not in ANALYTES or v.value is None:
            continue
        records.append(
            common
            | {
                "kind": "lab",
                "source_record_id": key,
                "observed_at": _iso(item),
                "analyte": v.concept,
                "value": v.original_value,
                "unit": v.original_unit,
            }
        )
    return records


def _administration(
    given: Administration, common: dict[str, Any], key: str
) -> list[dict[str, Any]]:
    if isinstance(given.drug, VasoactiveDrug):
        start: dict[str, Any] = common | {
            "kind": "vasopressor_start",
            "source_record_id": key,
            "started_at": given.started_at.isoformat(),
            "drug": str(given.drug),
        }
        if given.dose is not None:
            start |= {"dose": given.dose, "unit": given.dose_unit}
        records = [start]
        if given.stopped_at is not None:
            records.append(
                common
                | {
                    "kind": "vasopressor_stop",
                    "source_record_id": f"{key}.stop",
                    "stopped_at": given.stopped_at.isoformat(),
                    "start_record_id": key,
                }
            )
        return records
    return [
        common
        | {
            "kind": "treatment",
            "source_record_id": key,
            "given_at": given.started_at.isoformat(),
            "drug": str(given.drug),
        }
    ]


def _iso(item: Item) -> str:
    assert item.at is not None  # noqa: S101 - graded items always have a time
    return item.at.isoformat()


def feed_records(
    item: Item,
    *,
    patient: str,
    source_system: str,
    key: str,
    current_device: OxygenDevice | None = None,
) -> list[dict[str, Any]]:
    """The bedside-feed records of a graded item (none for other actions).

    ``current_device``: the oxygen device still current for the patient at the
    item's time (another resource recorded it); a flow sent without a device
    is graded with it, and only without one as a nasal cannula, flagged.
    """
    if item.action != "grade":
        return []
    common: dict[str, Any] = {"source_system": source_system, "patient": patient}
    if item.administration is not None:
        return _administration(item.administration, common, key)
    records = [
        *_vitals(item, common, key),
        *_oxygen(item, common, key, current_device),
        *_labs(item, common, key),
    ]
    if not records:
        item.hold("no-gradeable-value", "", "no value crsmon grades was sent")
    return records


def retractions(
    targets: list[str],
    *,
    patient: str,
    source_system: str,
    key: str,
    at: datetime,
    reason: str,
) -> list[dict[str, Any]]:
    """Retraction records for the feed keys of an earlier item."""
    return [
        {
            "kind": "retraction",
            "source_system": source_system,
            "source_record_id": f"{key}.r{n}",
            "patient": patient,
            "at": at.isoformat(),
            "target_record_id": target,
            "reason": reason,
        }
        for n, target in enumerate(targets, start=1)
    ]


def convert(concept: Concept, value: float, unit: str) -> float | None:
    """``value`` in ``unit`` as the concept's canonical unit; None: unknown unit."""
    units = UNITS.get(concept)
    known = None if units is None else units.get(unit)
    if known is None:
        return None
    if known.fahrenheit:
        return (value - 32) * 5 / 9
    return value * known.factor


def pair_devices(items: list[tuple[Item, list[tuple[str, str]]]]) -> None:
    """Within one Bundle, give an oxygen flow sent without a device the device
    recorded for the same patient at the same time in another entry (US Core
    sends the flow as a component of SpO2 and the device as LOINC 107117-4)."""
    devices = {
        (tuple(refs), item.at): v
        for item, refs in items
        for v in item.values
        if v.concept == "device" and v.device is not None and item.action == "grade"
    }
    for item, refs in items:
        concepts = {v.concept for v in item.values}
        if "device" in concepts or "flow_l_min" not in concepts:
            continue
        device = devices.get((tuple(refs), item.at))
        if device is not None:
            item.values.append(device)
            item.notes.append(
                Note(
                    "information",
                    "device-paired",
                    device.element,
                    "the flow is graded with the device recorded at the same time "
                    "in another entry of this Bundle",
                )
            )
